"""Properties of the VT modules (the paper's Sec. 3: Eqs. (1)-(5) and the ablation variants)."""

import flax
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from vt_jax.models import vt

B, H, W, C, L, CT = 2, 4, 5, 16, 6, 24


def feature_map(seed=0, n=H * W, c=C):
  return jax.random.normal(jax.random.key(seed), (B, n, c))


def token_batch(seed=1, l=L, ct=CT):
  return jax.random.normal(jax.random.key(seed), (B, l, ct))


def run(module, *inputs):
  variables = module.init(jax.random.key(3), *inputs)
  out, state = module.apply(variables, *inputs, mutable=["intermediates"])
  return out, state["intermediates"], variables


def sown(intermediates, name):
  found = [v for path, v in flax.traverse_util.flatten_dict(intermediates).items()
           if path[-1] == name]
  assert found, f"{name} not sown"
  return found[0][0]


TOKENIZER_CASES = {
    "filter-iccv": lambda: (vt.FilterTokenizer(L, CT, (H, W)), (feature_map(),)),
    "filter-v1-pe": lambda: (vt.FilterTokenizer(L, CT, (H, W), variant="v1", value_groups=4,
                                                position_encoding=True, pe_grid=2,
                                                pe_channels=5), (feature_map(),)),
    "pooling": lambda: (vt.PoolingTokenizer(4, CT, (H, W)), (feature_map(),)),
    "clustering": lambda: (vt.ClusteringTokenizer(L, CT, (H, W)), (feature_map(),)),
    "recurrent-iccv": lambda: (vt.RecurrentTokenizer(L, CT, (H, W)),
                               (feature_map(), token_batch())),
    "dynamic-v1": lambda: (vt.DynamicTokenizer(L, CT, (H, W), heads=4, value_groups=4,
                                               key_groups=2, pe_grid=2, pe_channels=5),
                           (feature_map(), token_batch())),
}


@pytest.mark.parametrize("case", sorted(TOKENIZER_CASES))
def test_spatial_attention_sums_to_one_over_pixels(case):
  module, inputs = TOKENIZER_CASES[case]()
  tokens, inter, _ = run(module, *inputs)
  a = sown(inter, "spatial_attention")
  assert a.shape[:2] == (B, H * W)
  np.testing.assert_allclose(a.sum(axis=1), 1.0, rtol=1e-5)
  assert (a >= 0).all()
  assert tokens.shape == (B, module.tokens, CT)


def test_filter_tokenizer_matches_reference_formula():
  """T = softmax_HW(X W_A)^T (X W_V): the cheap evaluation order is exact."""
  x = feature_map()
  module = vt.FilterTokenizer(L, CT, (H, W))
  tokens, _, variables = run(module, x)
  p = variables["params"]
  a = jax.nn.softmax(x @ p["attention"]["kernel"] + p["attention"]["bias"], axis=1)
  values = x @ p["value"]["kernel"] + p["value"]["bias"]
  expected = jnp.einsum("bnl,bnc->blc", a, values)
  np.testing.assert_allclose(tokens, expected, rtol=1e-4, atol=1e-4)


def test_filter_tokenizer_is_invariant_to_permuting_pixels():
  x = feature_map()
  perm = jax.random.permutation(jax.random.key(7), H * W)
  module = vt.FilterTokenizer(L, CT, (H, W), variant="v1", value_groups=4)
  variables = module.init(jax.random.key(0), x)
  a = module.apply(variables, x)
  b = module.apply(variables, x[:, perm])
  np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode,antialias", [("bilinear", False), ("antialiased", True)])
def test_pooling_tokenizer_is_bilinear_resize(mode, antialias):
  x = feature_map()
  module = vt.PoolingTokenizer(4, CT, (H, W), value_groups=1, resize=mode)
  _, inter, variables = run(module, x)
  a = sown(inter, "spatial_attention")
  pooled = jnp.einsum("bnl,bnc->blc", a, x)
  resized = jax.image.resize(x.reshape(B, H, W, C), (B, 2, 2, C), "linear", antialias=antialias)
  np.testing.assert_allclose(pooled, resized.reshape(B, 4, C), rtol=1e-4, atol=1e-5)


def test_clustering_assigns_each_pixel_to_exactly_one_cluster():
  x = feature_map()
  _, inter, _ = run(vt.ClusteringTokenizer(L, CT, (H, W)), x)
  a = np.asarray(sown(inter, "spatial_attention"))
  # Empty clusters average all pixels uniformly; every other column is a hard
  # k-means cluster: each pixel belongs to exactly one of them, with weight 1/size.
  real = ~np.all(np.isclose(a, 1.0 / (H * W)), axis=1)  # [B, L]
  assert real.sum(axis=1).min() >= 2
  member = (a > 0) & real[:, None, :]
  assert (member.sum(axis=2) == 1).all()
  sizes = member.sum(axis=1)  # [B, L]
  np.testing.assert_allclose(np.where(member, a, 0).max(axis=1)[real], 1.0 / sizes[real], rtol=1e-6)


@pytest.mark.parametrize("cls", [vt.RecurrentTokenizer, vt.DynamicTokenizer])
def test_recurrent_tokenizer_depends_on_input_tokens(cls):
  kwargs = dict(heads=4, value_groups=4, key_groups=2, pe_grid=2, pe_channels=5) \
      if cls is vt.DynamicTokenizer else {}
  module = cls(L, CT, (H, W), **kwargs)
  x, t = feature_map(), token_batch()
  variables = module.init(jax.random.key(0), x, t)
  out1 = module.apply(variables, x, t)
  out2 = module.apply(variables, x, token_batch(seed=9))
  assert float(jnp.abs(out1 - out2).max()) > 1e-3
  if cls is vt.DynamicTokenizer:  # v1 keeps the second half of the incoming tokens
    np.testing.assert_allclose(out1[:, :L // 2], t[:, L // 2:], rtol=1e-6)


@pytest.mark.parametrize("variant,kwargs", [
    ("iccv", dict(ffn_hidden=12)),
    ("v1", dict(qk_channels=12, qk_groups=2, value_groups=4, ffn_groups=2)),
])
def test_token_transformer_is_permutation_equivariant(variant, kwargs):
  t = token_batch()
  module = vt.TokenTransformer(heads=4, variant=variant, **kwargs)
  variables = module.init(jax.random.key(0), t)
  perm = jax.random.permutation(jax.random.key(5), L)
  out, state = module.apply(variables, t, mutable=["intermediates"])
  np.testing.assert_allclose(module.apply(variables, t[:, perm]), out[:, perm],
                             rtol=1e-4, atol=1e-5)
  w = sown(state["intermediates"], "token_attention")
  np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-5)


def test_graphconv_mixes_tokens_with_fixed_weights():
  t = token_batch()
  module = vt.GraphConv()
  variables = module.init(jax.random.key(0), t)
  g = variables["params"]["graph"]
  expected = t + jax.nn.relu(jnp.einsum("ij,bjc->bic", g, t))
  np.testing.assert_allclose(module.apply(variables, t), expected, rtol=1e-5, atol=1e-6)


def test_projector_weights_sum_to_one_over_tokens_and_identity_with_zero_values():
  x, t = feature_map(), token_batch()
  module = vt.Projector(heads=4, query_groups=2, kv_groups=2)
  out, inter, variables = run(module, x, t)
  w = sown(inter, "projector_attention")
  assert w.shape == (B, 4, H * W, L)
  np.testing.assert_allclose(w.sum(axis=-1), 1.0, rtol=1e-5)
  assert float(jnp.abs(out - x).max()) > 1e-3
  zeroed = jax.tree_util.tree_map(jnp.zeros_like, variables["params"]["value"])
  params = dict(variables["params"], value=zeroed)
  np.testing.assert_allclose(module.apply({"params": params}, x, t), x, rtol=0, atol=0)


def test_grouped_projection_is_block_diagonal():
  x = feature_map()
  layer = vt.projection(8, 4, jnp.float32, "p")
  variables = layer.init(jax.random.key(0), x)
  kernel = variables["params"]["conv"]["kernel"][0]  # [C/groups, out]
  ref = np.concatenate([np.asarray(x[..., g * 4:(g + 1) * 4]) @ np.asarray(kernel[:, g * 2:(g + 1) * 2])
                        for g in range(4)], axis=-1) + np.asarray(variables["params"]["conv"]["bias"])
  np.testing.assert_allclose(layer.apply(variables, x), ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mode,antialias", [("bilinear", False), ("antialiased", True)])
@pytest.mark.parametrize("src,dst,atol", [((5, 7), (3, 2), 1e-6), ((3, 4), (14, 9), 1e-5)],
                         ids=["downsample", "upsample"])
def test_resize_matrix_matches_jax_image_resize(src, dst, atol, mode, antialias):
  m = vt.resize_matrix(src, dst, mode)
  img = np.random.default_rng(0).normal(size=src).astype(np.float32)
  ref = jax.image.resize(img, dst, "linear", antialias=antialias)
  np.testing.assert_allclose((m @ img.reshape(-1)).reshape(dst), ref, rtol=1e-5, atol=atol)


def test_bad_token_counts_fail_clearly():
  with pytest.raises(ValueError, match="square token count"):
    vt.PoolingTokenizer(6, CT, (H, W)).init(jax.random.key(0), feature_map())
  with pytest.raises(ValueError, match="even token count"):
    vt.DynamicTokenizer(5, CT, (H, W), heads=4).init(
        jax.random.key(0), feature_map(), token_batch(l=5))


def test_projector_matches_per_head_reference():
  x, t = feature_map(), token_batch()
  heads = 4
  module = vt.Projector(heads=heads)
  out, _, variables = run(module, x, t)
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  q = np.asarray(x) @ p["query"]["kernel"] + p["query"]["bias"]
  k = np.asarray(t) @ p["key"]["kernel"] + p["key"]["bias"]
  v = np.asarray(t) @ p["value"]["kernel"] + p["value"]["bias"]
  d = C // heads
  expected = np.array(x)
  for h in range(heads):
    sl = slice(h * d, (h + 1) * d)
    w = jax.nn.softmax(np.einsum("bnd,bld->bnl", q[..., sl], k[..., sl]) / np.sqrt(d), axis=-1)
    expected[..., sl] += np.einsum("bnl,bld->bnd", w, v[..., sl])
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


# (heads, query groups): the 'tuned' form folds W_Q into the keys when every head reads
# whole query groups (groups a multiple of heads, > 1); (4, 2) and (4, 1) keep the query map.
@pytest.mark.parametrize("heads,groups,folded", [(4, 8, True), (2, 2, True), (4, 16, True),
                                                 (4, 2, False), (4, 1, False)])
@pytest.mark.parametrize("layers", ["flax", "tuned"])
def test_grouped_projector_matches_per_group_reference(heads, groups, folded, layers):
  x, t = feature_map(), token_batch()
  module = vt.Projector(heads=heads, query_groups=groups, layers=layers)
  assert module.folds_query(C, H * W, L) == (folded and layers == "tuned")
  assert not module.folds_query(C, L, L)  # no fewer MACs when pixels <= tokens
  variables = module.init(jax.random.key(3), x, t)
  # Random values everywhere: a zero bias would hide the folded bias term.
  leaves, tree = jax.tree_util.tree_flatten(variables)
  keys = jax.random.split(jax.random.key(4), len(leaves))
  variables = jax.tree_util.tree_unflatten(
      tree, [jax.random.normal(k, a.shape) / 2 for k, a in zip(keys, leaves)])
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  query = p["query"]["conv"] if groups > 1 else p["query"]
  kernel = query["kernel"].reshape(C // groups, C)  # [C/groups, C]; group g's outputs
  cg, xn = C // groups, np.asarray(x, np.float64)
  q = np.concatenate([xn[..., g * cg:(g + 1) * cg] @ kernel[:, g * cg:(g + 1) * cg]
                      for g in range(groups)], axis=-1) + query["bias"]
  k = np.asarray(t, np.float64) @ p["key"]["kernel"] + p["key"]["bias"]
  v = np.asarray(t, np.float64) @ p["value"]["kernel"] + p["value"]["bias"]
  d = C // heads
  expected = np.array(xn)
  for h in range(heads):
    sl = slice(h * d, (h + 1) * d)
    logits = np.einsum("bnd,bld->bnl", q[..., sl], k[..., sl]) / np.sqrt(d)
    w = np.exp(logits - logits.max(-1, keepdims=True))
    expected[..., sl] += np.einsum("bnl,bld->bnd", w / w.sum(-1, keepdims=True), v[..., sl])
  np.testing.assert_allclose(module.apply(variables, x, t), expected, rtol=1e-5, atol=1e-5)
  # Gradients: the folded form's (x, t and every parameter) equal the query map's.
  plain = vt.Projector(heads=heads, query_groups=groups, layers="flax")
  g = jax.random.normal(jax.random.key(5), x.shape)
  grads = [jax.grad(lambda v, x, t: jnp.sum(m.apply(v, x, t) * g), argnums=(0, 1, 2))(
      variables, x, t) for m in (module, plain)]
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4), *grads)


def test_iccv_transformer_matches_per_head_reference():
  t = token_batch()
  heads = 3
  module = vt.TokenTransformer(heads=heads, ffn_hidden=10)
  out, _, variables = run(module, t)
  p = jax.tree_util.tree_map(np.asarray, variables["params"])
  tn = np.asarray(t)
  q = tn @ p["query"]["kernel"] + p["query"]["bias"]
  k = tn @ p["key"]["kernel"] + p["key"]["bias"]
  d = CT // heads
  mid = np.array(tn)
  for h in range(heads):
    sl = slice(h * d, (h + 1) * d)
    w = jax.nn.softmax(np.einsum("bid,bjd->bij", q[..., sl], k[..., sl]) / np.sqrt(d), axis=-1)
    mid[..., sl] += np.einsum("bij,bjd->bid", w, tn[..., sl])  # values are the tokens
  hidden = np.maximum(mid @ p["ffn1"]["kernel"] + p["ffn1"]["bias"], 0)
  expected = mid + hidden @ p["ffn2"]["kernel"] + p["ffn2"]["bias"]
  np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


def test_position_encoding_reads_each_tokens_own_map():
  """P[l] depends only on token l's attention column, laid out as [H, W]."""
  module = vt.PositionEncoding((H, W), grid=2, channels=3)
  a = jax.nn.softmax(jax.random.normal(jax.random.key(0), (1, H * W, L)), axis=1)
  variables = module.init(jax.random.key(1), a)
  p = module.apply(variables, a)
  a2 = a.at[:, :, 2].set(jnp.roll(a[:, :, 2], 3))  # change token 2's map only
  p2 = module.apply(variables, a2)
  changed = np.abs(np.asarray(p2 - p)).max(axis=-1)[0]
  assert changed[2] > 1e-6 and np.all(np.delete(changed, 2) == 0)
  # A map that is spatially transposed differs: the layout is (H, W), not flat.
  flipped = a.reshape(1, H, W, L)[:, ::-1].reshape(1, H * W, L)
  assert float(jnp.abs(module.apply(variables, flipped) - p).max()) > 1e-6


@pytest.mark.parametrize("build,msg", [
    (lambda: vt.FilterTokenizer(L, CT, (H, W), value_groups=5), "model.vt.value_groups=5"),
    (lambda: vt.Projector(heads=5), "model.vt.projector_heads=5"),
    (lambda: vt.TokenTransformer(heads=5), "model.vt.heads=5"),
])
def test_divisibility_errors_name_the_field(build, msg):
  module = build()
  inputs = (feature_map(),) if isinstance(module, vt.FilterTokenizer) else \
      (token_batch(),) if isinstance(module, vt.TokenTransformer) else (feature_map(), token_batch())
  with pytest.raises(ValueError, match=msg):
    module.init(jax.random.key(0), *inputs)
