"""The pooling/position-encoding resize modes and the clustering tokenizer's assignment,
each against an independent reference (a closed formula, PIL, a NumPy k-means)."""

import flax
import jax
import numpy as np
import pytest
from PIL import Image

from vt_jax.models import vt


def torch_bilinear(img: np.ndarray, out_hw) -> np.ndarray:
  """PyTorch's F.interpolate(mode='bilinear', align_corners=False) written out per pixel
  (its aten CPU kernel's index arithmetic), float64."""
  h, w = img.shape
  oh, ow = out_hw

  def coords(size_in, size_out, i):
    src = max((i + 0.5) * size_in / size_out - 0.5, 0.0)
    i0 = min(int(np.floor(src)), size_in - 1)
    i1 = i0 + 1 if i0 < size_in - 1 else i0
    return i0, i1, src - i0

  out = np.zeros(out_hw)
  for y in range(oh):
    y0, y1, fy = coords(h, oh, y)
    for x in range(ow):
      x0, x1, fx = coords(w, ow, x)
      out[y, x] = ((1 - fy) * ((1 - fx) * img[y0, x0] + fx * img[y0, x1]) +
                   fy * ((1 - fx) * img[y1, x0] + fx * img[y1, x1]))
  return out


@pytest.mark.parametrize("src,dst", [((14, 14), (4, 4)), ((7, 5), (3, 2)), ((3, 4), (14, 9)),
                                     ((14, 14), (14, 14))])
def test_bilinear_matches_pytorch_formula(src, dst):
  img = np.random.default_rng(1).normal(size=src)
  m = vt.resize_matrix(src, dst, "bilinear")
  np.testing.assert_allclose((m @ img.reshape(-1)).reshape(dst), torch_bilinear(img, dst),
                             rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("src,dst", [((14, 14), (4, 4)), ((9, 12), (2, 5))])
def test_antialiased_matches_pil_bilinear(src, dst):
  """PIL's BILINEAR resize is a triangle filter widened by the downsampling factor."""
  img = np.random.default_rng(2).normal(size=src).astype(np.float32)
  ref = np.asarray(Image.fromarray(img, mode="F").resize(dst[::-1], Image.Resampling.BILINEAR))
  m = vt.resize_matrix(src, dst, "antialiased")
  np.testing.assert_allclose((m @ img.reshape(-1)).reshape(dst), ref, rtol=1e-4, atol=1e-5)


def test_bilinear_pooling_reads_64_of_196_pixels_and_differs_from_antialiased():
  bil = vt.resize_matrix((14, 14), (4, 4), "bilinear")
  aa = vt.resize_matrix((14, 14), (4, 4), "antialiased")
  assert (bil.sum(axis=0) > 0).sum() == 64
  assert (aa.sum(axis=0) > 0).sum() == 196
  assert (np.count_nonzero(bil, axis=1) == 4).all()


def test_unknown_resize_mode_names_the_field():
  with pytest.raises(ValueError, match="model.vt.resize='nearest'"):
    vt.resize_matrix((4, 4), (2, 2), "nearest")


@pytest.mark.parametrize("mode", ["bilinear", "antialiased"])
def test_position_encoding_resize_follows_the_mode(mode):
  """With the conv and dense maps replaced by identities/averages, the encoding is the
  resized attention map: its value must be the chosen resize of the input."""
  hw, grid = (14, 14), 2
  a = jax.random.uniform(jax.random.key(0), (1, 196, 3))
  pe = vt.PositionEncoding(hw, grid=grid, channels=grid * grid, resize=mode)
  variables = pe.init(jax.random.key(1), a)
  p = flax.core.unfreeze(variables["params"])
  k = np.zeros((3, 3, 1, 1), np.float32)
  k[1, 1] = 1.0  # picks the centre tap: stride-2 conv = every other resized pixel
  p["downsample"]["kernel"] = k
  p["downsample"]["bias"] = np.zeros(1, np.float32)
  p["to_channels"]["kernel"] = np.eye(grid * grid, dtype=np.float32)
  p["to_channels"]["bias"] = np.zeros(grid * grid, np.float32)
  out = np.asarray(pe.apply({"params": p}, a))  # [1, 3, g*g]
  maps = np.asarray(a)[0].T.reshape(3, 14, 14)
  for t in range(3):
    ref = torch_bilinear(maps[t], (4, 4)) if mode == "bilinear" else np.asarray(
        Image.fromarray(maps[t].astype(np.float32), mode="F").resize(
            (4, 4), Image.Resampling.BILINEAR))
    np.testing.assert_allclose(out[0, t], ref[::2, ::2].reshape(-1), rtol=1e-4, atol=1e-6)


def numpy_kmeans(feats: np.ndarray, init: np.ndarray, iterations: int) -> np.ndarray:
  """Textbook hard k-means by Euclidean distance (float64); returns assignments [N]."""
  c = feats[init].copy()
  for _ in range(iterations):
    assign = ((feats[:, None] - c[None]) ** 2).sum(-1).argmin(1)
    for k in range(len(c)):
      if (assign == k).any():
        c[k] = feats[assign == k].mean(0)
  return ((feats[:, None] - c[None]) ** 2).sum(-1).argmin(1)


def clustering_assignment(x: np.ndarray, spatial_shape, tokens, iterations) -> np.ndarray:
  module = vt.ClusteringTokenizer(tokens, 4, spatial_shape, iterations=iterations)
  variables = module.init(jax.random.key(0), x)
  _, state = module.apply(variables, x, mutable=["intermediates"])
  a = np.asarray(state["intermediates"]["spatial_attention"][0])  # [B, N, L]
  return a.argmax(-1)


def test_clustering_assigns_to_the_nearest_centroid_issue_case():
  """Unit 2-D features at 0, 120, 240, 300, 330 degrees, 2 tokens, 1 iteration: after the
  update the centroids are (0.25, 0.43) and (0.29, -0.74); pixel 0 (1, 0) is nearer
  centroid 0 (squared distances 0.75 vs 1.06) although its dot product with centroid 1
  is larger (0.29 vs 0.25)."""
  deg = np.deg2rad([0, 120, 240, 300, 330])
  x = np.stack([np.cos(deg), np.sin(deg)], -1)[None].astype(np.float32)  # [1, 5, 2]
  assign = clustering_assignment(x, (1, 5), tokens=2, iterations=1)
  np.testing.assert_array_equal(assign[0], [0, 0, 1, 1, 1])


def test_clustering_matches_numpy_kmeans():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(3, 36, 5)).astype(np.float32)
  got = clustering_assignment(x, (6, 6), tokens=4, iterations=3)
  init = np.array([0, 5, 30, 35])  # the 2x2 grid of pixels over the 6x6 map, row-major
  for b in range(3):
    f = x[b] / np.linalg.norm(x[b], axis=-1, keepdims=True)
    np.testing.assert_array_equal(got[b], numpy_kmeans(f.astype(np.float64), init, 3))
