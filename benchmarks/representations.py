"""The cost of Barron's image representations (core/representations.py) against pixels, in one process.

    .venv/bin/python benchmarks/representations.py                       # CPU, 28×28 grey and 32×32 colour
    .venv/bin/python benchmarks/representations.py --device cuda --batch-size 512

Two measurements per representation (pixels = the identity, the baseline; DCT; CDF 9/7 wavelet; each in
RGB and in Barron's YUV for colour images):

- transform: T(r) forward and backward of a (B, C, H, W) residual, alone (the matmuls);
- step: one VAE training step (core.engine's objective: forward, the per-coefficient likelihood on
  T(x − x̂) — normal by default, `--distribution` — backward, Adam), the cost a run actually pays.

Each is timed as the best of --repeats rounds of --iters calls, the representations taking turns round
after round (a shared machine only ever slows a measurement), and printed with its ratio to pixels
measured in the same process. On CUDA the clocks are
read after a synchronize.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.config import make_config
from core.device import configure_threads, resolve_device
from core.engine import build_objective
from core.families import Batch
from core.representations import make_representation


def _interleaved(calls: dict[str, Callable[[], None]], iters: int, repeats: int, device: torch.device
                 ) -> dict[str, float]:
    """Seconds per call of each: rounds of `iters` calls, the callables taking turns round after round (so a
    change in the machine's load falls on all of them), the best round of each kept; one warm-up call each."""
    for fn in calls.values():
        fn()
    best = dict.fromkeys(calls, float("inf"))
    for _ in range(repeats):
        for name, fn in calls.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(iters):
                fn()
            if device.type == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], (time.perf_counter() - start) / iters)
    return best


def _transform_call(shape: tuple[int, int, int], spatial: str, colour: str, batch: int, device: torch.device
                    ) -> Callable[[], None]:
    t = make_representation(shape, spatial, colour).to(device)
    r = torch.randn(batch, *shape, device=device, requires_grad=True)

    def call() -> None:
        y = t(r)
        y.sum().backward()

    return call


def _step_call(dataset: str, spatial: str, colour: str, batch: int, width: int, distribution: str,
               device: torch.device) -> Callable[[], None]:
    extra = {"colour": colour} if colour != "rgb" else {}
    config = make_config(dataset=dataset, representation=spatial, distribution=distribution, width=width,
                         latent_dim=16, batch_size=batch, **extra)
    objective = build_objective(config, device)
    optimizer = torch.optim.Adam(objective.parameters(), lr=1e-3)
    shape = tuple(config["model"]["image_shape"])
    images = torch.randint(0, 256, (batch, *shape), dtype=torch.uint8, device=device)
    step = [0]

    def call() -> None:
        step[0] += 1
        out = objective(Batch(images, torch.zeros(batch, dtype=torch.long, device=device),
                              torch.arange(batch, device=device), step[0], 0, batch))
        loss = (out["terms"]["recon"] + out["terms"]["kl"]).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return call


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=8, help="the VAE's channels (the shipped grid's)")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-steps", action="store_true", help="time the transforms only")
    p.add_argument("--distribution", default="normal", choices=("normal", "cauchy", "students_t", "general"),
                   help="the step's likelihood (default normal: its cost does not depend on the residual's values, "
                        "the general distribution's CPU path does, which would blur the transforms' cost)")
    args = p.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} thread(s), batch {args.batch_size}, "
          f"VAE width {args.width}, {args.distribution} likelihood")
    cases = [("fashion_mnist", (1, 28, 28), ("rgb",)), ("photos", (3, 32, 32), ("rgb", "yuv"))]
    for dataset, shape, colours in cases:
        maps = [(spatial, colour) for colour in colours for spatial in ("pixels", "dct", "wavelet")]
        transforms = _interleaved({m: _transform_call(shape, *m, args.batch_size, device) for m in maps},
                                  args.iters * 10, args.repeats, device)
        step_calls = {} if args.no_steps else {
            m: _step_call(dataset, *m, args.batch_size, args.width, args.distribution, device) for m in maps}
        steps = _interleaved(step_calls, args.iters, args.repeats, device) if step_calls else {}
        base_t, base_s = transforms[("pixels", "rgb")], steps.get(("pixels", "rgb"))
        for spatial, colour in maps:
            label = f"{'×'.join(map(str, shape))} {colour.upper() if shape[0] == 3 else 'grey'}"
            t_s = transforms[(spatial, colour)]
            line = f"{label:>14} {spatial:>8}: transform fwd+bwd {t_s * 1e3:8.3f} ms (pixels {base_t * 1e3:.3f})"
            if steps:
                s_s = steps[(spatial, colour)]
                line += f"   VAE step {s_s * 1e3:8.2f} ms = {s_s / base_s:5.2f}× pixels"
            print(line, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
