"""The batched augmentations: each operation equals torchvision's at the parameters drawn for that image,
every image draws its own parameters, the draws follow the generator (resumable) and a rank's rows are the
global batch's rows."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torchvision.transforms.v2 import functional as TF

from core.augment import RECIPES, AugmentParams, Recipe, apply, augment, draw, hsv_to_rgb, recipe_pair, rgb_to_hsv

OFF = Recipe(crop=False, flip=0.0, jitter_p=0.0, gray_p=0.0, blur_p=0.0, solarize_p=0.0)


def _images(n: int = 6, c: int = 3, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, size, size, generator=torch.Generator().manual_seed(seed))


def _params(recipe: Recipe, n: int, seed: int = 1) -> AugmentParams:
    return draw(recipe, n, torch.Generator().manual_seed(seed))


def test_colour_jitter_is_torchvisions_brightness_contrast_saturation_hue_per_image():
    x = _images()
    recipe = replace(OFF, jitter_p=1.0)
    p = _params(recipe, len(x))
    assert len(set(p.factors[:, 0].tolist())) == len(x)  # each image its own factors
    out = apply(x, p)
    for i in range(len(x)):
        b, c, s, h = p.factors[i].tolist()
        ref = TF.adjust_hue(TF.adjust_saturation(TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), s), h)
        assert torch.allclose(out[i], ref, atol=5e-5), i


def test_grayscale_solarise_and_blur_are_torchvisions_where_drawn():
    x = _images(8)
    gray = apply(x, _params(replace(OFF, gray_p=0.5), 8))
    p = _params(replace(OFF, gray_p=0.5), 8)
    assert 0 < int(p.gray.sum()) < 8  # some are, some are not
    for i in range(8):
        ref = TF.rgb_to_grayscale(x[i], num_output_channels=3) if p.gray[i] else x[i]
        assert torch.allclose(gray[i], ref, atol=1e-6)
    p = _params(replace(OFF, solarize_p=0.5), 8)
    sol = apply(x, p)
    for i in range(8):
        ref = TF.solarize(x[i], threshold=128 / 255) if p.solarize[i] else x[i]
        assert torch.allclose(sol[i], ref, atol=1e-6)
    recipe = replace(OFF, blur_p=1.0, blur_kernel=5)
    p = _params(recipe, 8)
    blurred = apply(x, p)
    for i in range(8):
        sigma = float(p.sigma[i])
        ref = TF.gaussian_blur(x[i], kernel_size=[5, 5], sigma=[sigma, sigma])
        assert torch.allclose(blurred[i], ref, atol=1e-5), i


def test_the_crop_resamples_its_box_like_torchvisions_resized_crop_and_flip():
    x = _images(3, size=32)
    # boxes on whole pixels: (top, left, height, width)
    boxes = [(4, 2, 16, 16), (0, 8, 24, 20), (10, 10, 20, 12)]
    size = torch.tensor([[w / 32, h / 32] for _, _, h, w in boxes])
    centre = torch.tensor([[(left + w / 2) / 32, (top + h / 2) / 32] for top, left, h, w in boxes])
    flip = torch.tensor([False, True, False])
    base = _params(replace(OFF, crop=True, flip=0.5), 3)
    p = replace(base, centre=centre, size=size, flip=flip)
    out = apply(x, p)
    for i, (top, left, h, w) in enumerate(boxes):
        ref = TF.resized_crop(x[i], top, left, h, w, [32, 32], antialias=False)
        ref = TF.horizontal_flip(ref) if flip[i] else ref
        # inside, the same bilinear sampling; at the box's edge torchvision clamps to the box, we read on
        assert torch.allclose(out[i, :, 2:-2, 2:-2], ref[:, 2:-2, 2:-2], atol=1e-5), i


def test_every_image_draws_its_own_crop_inside_the_image_within_the_recipes_ranges():
    recipe = RECIPES["cifar"][0]
    p = _params(recipe, 4000)
    area = p.size.prod(dim=1)
    assert area.min() >= 0.2 - 1e-6 and area.max() <= 1 + 1e-6
    ratio = p.size[:, 0] / p.size[:, 1]
    inside = (area < 1 - 1e-6)
    assert ratio[inside].min() >= 3 / 4 - 1e-5 and ratio[inside].max() <= 4 / 3 + 1e-5
    assert ((p.centre - p.size / 2) >= -1e-6).all() and ((p.centre + p.size / 2) <= 1 + 1e-6).all()
    assert 0.45 < p.flip.float().mean() < 0.55 and 0.77 < p.jitter.float().mean() < 0.83
    assert 0.17 < p.gray.float().mean() < 0.23 and 0.08 < p.solarize.float().mean() < 0.12
    assert not p.blur.any()  # solo-learn's CIFAR recipe has no blur
    assert len(torch.unique(p.centre[:, 0])) > 3950  # all distinct but the few whole-image fallbacks (centre ½)


def test_draws_follow_the_generator_and_a_ranks_rows_are_the_global_batchs():
    x = _images(7)
    recipe = RECIPES["official"][1]
    a = augment(x, recipe, torch.Generator().manual_seed(5))
    b = augment(x, recipe, torch.Generator().manual_seed(5))
    c = augment(x, recipe, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    for rank in (0, 1):
        part = augment(x[rank::2], recipe, torch.Generator().manual_seed(5), total=7, rank=rank, world=2)
        assert torch.allclose(part, a[rank::2], atol=1e-6)


def test_one_channel_images_skip_the_colour_operations():
    x = _images(4, c=1, size=28)
    p = _params(replace(RECIPES["cifar"][0], jitter_p=1.0, gray_p=1.0, crop=False, flip=0.0, solarize_p=0.0), 4)
    out = apply(x, p)
    assert out.shape == x.shape
    for i in range(4):
        b, c, _, _ = p.factors[i].tolist()
        assert torch.allclose(out[i], TF.adjust_contrast(TF.adjust_brightness(x[i], b), c), atol=1e-5)


def test_hsv_round_trip_and_recipe_checks():
    x = _images(5)
    assert torch.allclose(hsv_to_rgb(rgb_to_hsv(x)), x, atol=1e-5)
    assert recipe_pair("cifar", 0.5)[0].crop_scale == (0.5, 1.0)
    with pytest.raises(ValueError, match="unknown augmentation recipe"):
        recipe_pair("imagenet")
    with pytest.raises(ValueError, match="crop scale"):
        Recipe(crop_scale=(0.0, 1.0))
    with pytest.raises(ValueError, match="odd"):
        Recipe(blur_kernel=4)
    first, second = RECIPES["official"]
    assert (first.blur_p, first.solarize_p, second.blur_p, second.solarize_p) == (1.0, 0.0, 0.1, 0.2)
