/*
 * Barron's general robust loss in the browser, so the Loss Explorer can redraw while a slider moves.
 *
 * The forms are those of core/losses/general.py, so the numbers are the library's (a browser test
 * compares them on a grid of α, c and x). With z = (x/c)², b = |α − 2| and L = log1p(z/b):
 *
 *   ρ(x, α, c) = (b/α)·expm1((α/2)·L)          no cancellation at small α or small z
 *   ψ(x, α, c) = (x/c²)·exp(((α − 2)/2)·L)     and ψ/x = exp(((α − 2)/2)·L)/c²
 *
 * with the members where that divides by zero written out: α ≈ 0 (|α| < 1e-20) is log1p(z/2), α = 2 is
 * z/2, α = −∞ is −expm1(−z/2), α = +∞ is expm1(z/2). log Z(α) is not computed here: the server sends a
 * table of core.losses.log_partition (knots, values, slopes) and this file interpolates it with the
 * same cubic Hermite splines as core.explorer.interpolate_log_z. Values beyond float64's range are
 * ±Infinity, which the charts draw as a gap.
 */
(function (root) {
  "use strict";

  const ZERO_ALPHA = 1e-20; // below this |α|, ρ equals the α = 0 member to float64 rounding (as core.losses)

  function rho(x, alpha, c) {
    const xs = x / c;
    const z = xs * xs;
    if (alpha === Infinity) return Math.expm1(z / 2);
    if (alpha === -Infinity) return -Math.expm1(-z / 2);
    if (alpha === 2) return z / 2;
    if (Math.abs(alpha) < ZERO_ALPHA) return Math.log1p(z / 2);
    const b = Math.abs(alpha - 2);
    return (b / alpha) * Math.expm1((alpha / 2) * Math.log1p(z / b));
  }

  // The factor w with ψ = w·x/c² and ψ/x = w/c²: (z/b + 1)^((α − 2)/2), exp(∓z/2) at α = ∓∞, 1 at α = 2.
  function influenceFactor(z, alpha) {
    if (alpha === 2) return 1;
    if (alpha === Infinity) return Math.exp(z / 2);
    if (alpha === -Infinity) return Math.exp(-z / 2);
    return Math.exp(((alpha - 2) / 2) * Math.log1p(z / Math.abs(alpha - 2)));
  }

  function psi(x, alpha, c) {
    const xs = x / c;
    return (influenceFactor(xs * xs, alpha) * xs) / c;
  }

  function weight(x, alpha, c) {
    const xs = x / c;
    return influenceFactor(xs * xs, alpha) / (c * c);
  }

  // log Z(α) from the server's table: NaN for α < 0 (no density) and beyond the table's last knot.
  function logZ(alpha, table) {
    if (!(alpha >= 0)) return NaN;
    if (alpha === Infinity) return table.inf;
    const k = table.knots;
    const n = k.length;
    if (alpha > k[n - 1]) return NaN;
    let lo = 0;
    let hi = n - 1; // k[lo] ≤ α; the interval is the last knot at or below α, at most n − 2
    while (hi - lo > 1) {
      const mid = (lo + hi) >> 1;
      if (k[mid] <= alpha) lo = mid;
      else hi = mid;
    }
    const h = k[lo + 1] - k[lo];
    const t = (alpha - k[lo]) / h;
    const t2 = t * t;
    const t3 = t2 * t;
    return (
      (2 * t3 - 3 * t2 + 1) * table.values[lo] +
      (t3 - 2 * t2 + t) * h * table.slopes[lo] +
      (-2 * t3 + 3 * t2) * table.values[lo + 1] +
      (t3 - t2) * h * table.slopes[lo + 1]
    );
  }

  // −log p(x | α, c) = ρ(x, α, c) + log c + log Z(α), for α ≥ 0.
  function nll(x, alpha, c, table) {
    return rho(x, alpha, c) + Math.log(c) + logZ(alpha, table);
  }

  // The normalised Student's t NLL; `constant` = ½ log ν + lgamma(ν/2) − lgamma((ν+1)/2) + ½ log π,
  // computed by the server (core.explorer.students_t_constant).
  function studentsTNll(x, nu, s, constant) {
    const u = x / s;
    return 0.5 * (nu + 1) * Math.log1p((u * u) / nu) + Math.log(s) + constant;
  }

  // The t's scale with the general loss's curvature at x = 0: ν = 1 is then the α = 0 member.
  function studentsTScale(c, nu) {
    return c * Math.sqrt((nu + 1) / nu);
  }

  // lim ρ as |x| → ∞: (2 − α)/(−α) for α < 0, 1 at −∞, +∞ otherwise.
  function rhoLimit(alpha) {
    if (alpha === -Infinity) return 1;
    if (alpha < 0) return (2 - alpha) / -alpha;
    return Infinity;
  }

  // α as JSON carries it: a number, or "+inf" / "-inf".
  function alphaFromJson(value) {
    if (value === "+inf") return Infinity;
    if (value === "-inf") return -Infinity;
    return value;
  }

  function alphaToJson(alpha) {
    if (alpha === Infinity) return "+inf";
    if (alpha === -Infinity) return "-inf";
    return alpha;
  }

  // Python's f"{value:.{digits}f}": toFixed rounds to nearest on the exact binary value, as Python does,
  // except at an exact tie (1.625 to two decimals), which toFixed rounds away from zero and Python to
  // the even neighbour. toFixed(100) gives the binary value's decimal digits, so a tie can be seen.
  function fixed(value, digits) {
    const plain = value.toFixed(digits);
    const exact = Math.abs(value).toFixed(100);
    const point = exact.indexOf(".");
    if (!/^50*$/.test(exact.slice(point + 1 + digits))) return plain;
    const kept = value.toFixed(100).slice(0, (value < 0 ? 1 : 0) + point + 1 + digits).replace(/\.$/, "");
    return Number(kept[kept.length - 1]) % 2 === 0 ? kept : plain;
  }

  // α as core.explorer.alpha_label writes it: "−∞", "+∞", or at most two decimals with a true minus.
  function alphaLabel(alpha) {
    if (alpha === -Infinity) return "−∞";
    if (alpha === Infinity) return "+∞";
    const text = fixed(alpha, 2).replace(/0+$/, "").replace(/\.$/, "");
    if (text === "-0" || text === "") return "0";
    return text.replace("-", "−");
  }

  // c, ν and the x range as core.explorer.number_label writes them (Python's ".3g"), for 1e-4 ≤ v < 1000.
  function numberLabel(value) {
    if (value === 0) return "0";
    const exponent = Math.floor(Math.log10(Math.abs(value)));
    if (exponent < -4 || exponent >= 3) return String(Number(value.toPrecision(3)));
    const text = fixed(value, Math.max(0, 2 - exponent));
    return text.includes(".") ? text.replace(/0+$/, "").replace(/\.$/, "") : text;
  }

  // The sentence for α from the server's rules (core.explorer.DESCRIPTION_RULES): first match wins.
  function describe(alpha, rules) {
    for (const [op, bound, sentence] of rules) {
      const b = alphaFromJson(bound);
      if ((op === "eq" && alpha === b) || (op === "gt" && alpha > b) || (op === "lt" && alpha < b)) {
        return sentence.replace("{limit}", alphaLabel(rhoLimit(alpha)));
      }
    }
    return "";
  }

  root.RobustLossMath = {
    rho, psi, weight, logZ, nll, studentsTNll, studentsTScale, rhoLimit,
    alphaFromJson, alphaToJson, alphaLabel, numberLabel, describe, fixed,
  };
})(window);
