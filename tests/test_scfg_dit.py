"""S-CFG on tiny DiTs of each family (scripts/tiny_dits.py) in real ComfyUI sampling: the guided
prediction equals uncond + s * rate * (cond - uncond) with the rate recomputed from the attention
calls' q and k by a naive full softmax, the layout of each family written out here; cond and uncond
in one call or two, batch 2, reference-image tokens (Kontext), padding, chained overrides, errors."""

import math

import comfy_api_helpers as helpers
import pytest
import torch

S0 = 4.0
# Per family: joint or cross attention, where the image starts for a text of T tokens, where the text
# starts, and whether token 0 is a start token (the reference). Tiny models: patch size 2.
LAYOUTS = {
    "sd3": ("joint", lambda t: t, 0, True),
    "sd35_medium": ("joint", lambda t: t, 0, True),
    "flux_dev": ("joint", lambda t: t, 0, False),
    "chroma": ("joint", lambda t: t, 0, False),
    "qwen_image": ("joint", lambda t: t, 0, False),
    "lumina2": ("joint", lambda t: t, 0, True),
    "z_image": ("joint", lambda t: 32 * math.ceil(t / 32), 0, False),  # text padded to a multiple of 32
    "aura_flow": ("joint", lambda t: 8 + t, 8, False),  # 8 register tokens first
    "wan21": ("cross", None, 0, False),
    "cosmos_predict2": ("cross", None, 0, False),
}
CALLS_PER_FORWARD = {"flux_dev": 2, "chroma": 2, "aura_flow": 2, "sd3": 2, "sd35_medium": 2}  # else 1


@pytest.fixture(scope="module")
def dits(comfy):
    import tiny_dits

    return tiny_dits


def scfg(comfy, model, **changes):
    node = comfy.pack.nodes.scfg.SCFG
    return node().patch(model, **{**helpers.widget_defaults(node), **changes})[0]


def ksample(comfy, model, tiny, latent=None, positive=None, negative=None, steps=3, cfg=S0):
    latent = {"samples": tiny.latent if latent is None else latent}
    positive, negative = positive or tiny.positive, negative or tiny.negative
    return comfy.nodes.common_ksampler(model, 0, steps, cfg, "euler", "simple", positive, negative, latent)[0][
        "samples"
    ]


class Recorder:
    """A foreign pack's attention override (every call's q and k) and a post-CFG function after the
    pack's (each evaluation's predictions and where its calls end in the call list). Closures, not
    bound methods, so ModelPatcher.clone's deepcopy of model_options keeps them."""

    def __init__(self):
        self.calls, self.evaluations = [], []

        def override(func, *args, **kwargs):
            options = kwargs.get("transformer_options") or {}
            heads = args[3] if len(args) > 3 else kwargs.get("heads")
            self.calls.append(
                dict(q=args[0].detach().clone(), k=args[1].detach().clone(), heads=heads,
                     split=bool(kwargs.get("skip_reshape")), cond_or_uncond=list(options.get("cond_or_uncond", [])))
            )  # fmt: skip
            return func(*args, **kwargs)

        def post_cfg(args):
            self.evaluations.append(
                dict(cond=args["cond_denoised"], uncond=args["uncond_denoised"], out=args["denoised"],
                     x=args["input"], scale=args["cond_scale"], end=len(self.calls))
            )  # fmt: skip
            return args["denoised"]

        self.override, self.post_cfg = override, post_cfg

    def install(self, model):
        model.model_options.setdefault("transformer_options", {})["optimized_attention_override"] = self.override
        return model

    def attach(self, model):
        model.set_model_sampler_post_cfg_function(self.post_cfg)
        return model


def heads_first(t, heads, split):
    return t if split else t.view(t.shape[0], t.shape[1], heads, -1).transpose(1, 2)


def read_grid(grid):
    """The maps' grid: half the token grid (1/4 of the latent side), the centre pixel of each 2 x 2 block
    as query, the keys summed per block."""
    (h, w), (hp, wp) = grid, (-(-grid[0] // 2), -(-grid[1] // 2))
    centres = [min(2 * i + 1, h - 1) * w + min(2 * j + 1, w - 1) for i in range(hp) for j in range(wp)]
    sums = torch.zeros(h * w, hp * wp)
    for i in range(h):
        for j in range(w):
            sums[i * w + j, (i // 2) * wp + j // 2] = 1.0
    return (hp, wp), centres, sums


def naive_maps(call, image_start, grid, text_start, text_length, with_self):
    q, k = heads_first(call["q"], call["heads"], call["split"]), heads_first(call["k"], call["heads"], call["split"])
    probs = (q.float() @ k.float().transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1).mean(1)
    _, centres, sums = read_grid(grid)
    n = grid[0] * grid[1]
    rows = probs[:, image_start : image_start + n][:, centres]
    cross = rows[..., text_start : text_start + text_length]
    cross = cross / cross.sum(-1, keepdim=True)
    if not with_self:
        return cross, None
    own = rows[..., image_start : image_start + n] @ sums
    return cross, own / own.sum(-1, keepdim=True)


def lengths(call):
    if call["split"]:
        return call["q"].shape[2], call["k"].shape[2]
    return call["q"].shape[1], call["k"].shape[1]


def expected_maps(pack, name, calls, grid, text_lengths, blocks, valid, start_token=None):
    """Each pass's layer-averaged (tokens, fore) from the calls of one evaluation, by the maths module."""
    kind, image_start_of, text_start, family_start = LAYOUTS[name]
    start_token = family_start if start_token is None else start_token
    n = grid[0] * grid[1]
    per_pass, counted, pending = {0: [], 1: []}, 0, None
    for call in calls:
        lq, lk = lengths(call)
        text_length = text_lengths[call["cond_or_uncond"][0]]
        if kind == "joint":
            image_start = image_start_of(text_length)
            if not (lq == lk and lq >= image_start + n):
                continue
            block, counted = counted % CALLS_PER_FORWARD.get(name, 1), counted + 1
            if block not in blocks:
                continue
            cross, own = naive_maps(call, image_start, grid, text_start, text_length, True)
        elif lq == lk == n:
            pending = naive_maps(call, 0, grid, 0, n, True)[1]  # the image self-attention of the block
            continue
        elif lq == n and lk == text_length:
            cross, own = naive_maps(call, 0, grid, 0, lk, False)[0], pending
        else:
            continue
        for index, kind_of_chunk in enumerate(call["cond_or_uncond"]):
            pass_index = 1 if kind_of_chunk == 0 else 0
            rows = slice(index * cross.shape[0] // len(call["cond_or_uncond"]),
                         (index + 1) * cross.shape[0] // len(call["cond_or_uncond"]))  # fmt: skip
            chunk = cross[rows].reshape(-1, *read_grid(grid)[0], cross.shape[-1])
            layer = pack.guidance.scfg.process_layer(
                chunk, own[rows], "code", valid=valid[pass_index], start_token=start_token
            )
            per_pass[pass_index].append(layer)
    return tuple(pack.guidance.scfg.average_layers(per_pass[index]) for index in (0, 1))


def check_exact(comfy, name, tiny, recorder, blocks, text_lengths, valid=None, start_token=None):
    """Every evaluation's guided x0 equals uncond + s * rate * delta with the recomputed rate."""
    pack = comfy.pack
    grid = tuple(-(-side // 2) for side in tiny.latent.shape[-2:])
    valid = valid or {i: torch.ones(text_lengths[1 - i], dtype=torch.bool) for i in (0, 1)}  # pass 1 = cond
    start, rates = 0, []
    for evaluation in recorder.evaluations:
        calls = recorder.calls[start : evaluation["end"]]
        start = evaluation["end"]
        batch = evaluation["x"].shape[0]
        masks = {i: valid[i].expand(batch, -1) for i in (0, 1)}
        uncond_maps, cond_maps = expected_maps(pack, name, calls, grid, text_lengths, blocks, masks, start_token)
        delta = evaluation["cond"] - evaluation["uncond"]
        rate = pack.guidance.scfg.spatial_rate(delta, uncond_maps, cond_maps, evaluation["scale"])
        expected = evaluation["uncond"] + delta * (evaluation["scale"] * rate)
        effect = (evaluation["out"] - (evaluation["uncond"] + delta * evaluation["scale"])).abs().max()
        assert (evaluation["out"] - expected).abs().max() <= 1e-4 + 1e-3 * effect, name
        rates.append(rate)
    return torch.stack(rates)


FAMILIES = ["sd3", "sd35_medium", "flux_dev", "chroma", "qwen_image", "wan21", "lumina2", "z_image", "aura_flow"]
FAMILIES += ["cosmos_predict2"]


@pytest.mark.parametrize("name", FAMILIES)
def test_guided_prediction_is_cfg_with_the_rate_from_the_attention_maps(comfy, dits, name):
    tiny = dits.FAMILIES[name]()
    recorder = Recorder()
    model = recorder.attach(scfg(comfy, recorder.install(tiny.patcher.clone()), layers="all"))
    guided = ksample(comfy, model, tiny)
    rates = check_exact(comfy, name, tiny, recorder, range(2), {0: 7, 1: 7})
    assert len(recorder.evaluations) == 3 and torch.isfinite(guided).all()
    assert (rates - 1).abs().amax() > 0.05  # regions differ: rates differ from 1
    plain = ksample(comfy, tiny.patcher, tiny)
    assert not torch.allclose(guided, plain, atol=1e-3)
    assert torch.equal(ksample(comfy, scfg(comfy, tiny.patcher, rate_min=1.0, rate_max=1.0), tiny), plain)


@pytest.mark.parametrize("name", ["qwen_image", "chroma", "lumina2", "wan21"])
def test_cond_and_uncond_of_different_lengths_run_as_two_calls(comfy, dits, name):
    tiny = dits.FAMILIES[name]()
    negative = [[tiny.negative[0][0][:, :5], dict(tiny.negative[0][1])]]
    recorder = Recorder()
    model = recorder.attach(scfg(comfy, recorder.install(tiny.patcher.clone()), layers="all"))
    ksample(comfy, model, tiny, negative=negative)
    assert {tuple(call["cond_or_uncond"]) for call in recorder.calls} == {(0,), (1,)}  # separate passes
    check_exact(comfy, name, tiny, recorder, range(2), {0: 7, 1: 5})


@pytest.mark.parametrize("name", ["sd3", "flux_dev", "wan21"])
def test_batch_of_two_non_square(comfy, dits, name):
    tiny = dits.FAMILIES[name]()
    latent = torch.cat([tiny.latent, tiny.latent.flip(-1)])
    recorder = Recorder()
    model = recorder.attach(scfg(comfy, recorder.install(tiny.patcher.clone()), layers="all"))
    guided = ksample(comfy, model, tiny, latent=latent)
    assert guided.shape == latent.shape and latent.shape[-1] != latent.shape[-2]
    check_exact(comfy, name, tiny, recorder, range(2), {0: 7, 1: 7})


def test_reference_image_tokens_after_the_image_are_not_read_as_image(comfy, dits):
    """Flux Kontext appends the reference image's tokens after the image: S-CFG reads the first h*w."""
    tiny = dits.flux_dev()
    positive, negative = (
        [[c[0][0], {**c[0][1], "reference_latents": [tiny.latent]}]] for c in (tiny.positive, tiny.negative)
    )
    recorder = Recorder()
    model = recorder.attach(scfg(comfy, recorder.install(tiny.patcher.clone()), layers="0-1"))
    ksample(comfy, model, tiny, positive=positive, negative=negative)
    assert lengths(recorder.calls[0])[0] == 7 + 2 * 24  # text, image, reference image
    check_exact(comfy, "flux_dev", tiny, recorder, range(2), {0: 7, 1: 7})


def test_zeroed_padding_owns_no_region(comfy, dits):
    """Wan's umT5 padding is zeroed by ComfyUI: those tokens take no region."""
    tiny = dits.wan21()
    padded = [[[torch.cat([c[0][0], torch.zeros(1, 5, c[0][0].shape[-1])], dim=1), c[0][1]]] for c in (tiny.positive, tiny.negative)]  # fmt: skip
    seen = []
    model = scfg(comfy, tiny.patcher)
    term = comfy.pack.nodes.patching.guidance_stack(model).get("scfg")
    observed = comfy.pack.guidance.scfg.scfg_term(
        observer=lambda *a: seen.append(a[2]), **{k: v for k, v in term.params.items() if k != "check_latent"}
    )
    model = comfy.pack.nodes.patching.add_guidance_term(model, observed, replacing=True)
    ksample(comfy, model, tiny, positive=padded[0], negative=padded[1])
    tokens = seen[0][0]
    assert tokens.shape[1] == 12 and torch.all(tokens[:, 7:] == -1)
    assert comfy.pack.guidance.scfg.region_masks(tokens)[:, 7:].sum() == 0


def test_the_whole_image_reference_option_on_a_family_with_a_start_token(comfy, dits):
    tiny = dits.sd3()
    recorder = Recorder()
    model = recorder.attach(scfg(comfy, recorder.install(tiny.patcher.clone()), reference_token="whole image"))
    ksample(comfy, model, tiny)
    check_exact(comfy, "sd3", tiny, recorder, range(2), {0: 7, 1: 7}, start_token=False)


def test_plain_cfg_outside_start_and_end(comfy, dits):
    tiny = dits.sd3()
    recorder = Recorder()
    ksample(comfy, recorder.attach(scfg(comfy, tiny.patcher, start=0.5)), tiny, steps=4)
    early = recorder.evaluations[:3]  # progress (1 - sigma of SD3's shifted schedule) 0, 0.1, 0.25
    for evaluation in early:
        plain = evaluation["uncond"] + (evaluation["cond"] - evaluation["uncond"]) * evaluation["scale"]
        assert torch.equal(evaluation["out"], plain)
    late = recorder.evaluations[3]  # progress 0.5
    assert not torch.allclose(late["out"], late["uncond"] + (late["cond"] - late["uncond"]) * late["scale"])


def test_a_foreign_attention_override_keeps_running_and_is_restored(comfy, dits):
    tiny = dits.flux_dev()
    without, with_scfg = Recorder(), Recorder()
    ksample(comfy, without.install(tiny.patcher.clone()), tiny)
    model = scfg(comfy, with_scfg.install(tiny.patcher.clone()))
    ksample(comfy, model, tiny)
    assert len(with_scfg.calls) == len(without.calls) > 0  # every call still reaches the other pack's kernel
    assert model.model_options["transformer_options"]["optimized_attention_override"] is with_scfg.override
    late = Recorder()  # an override set after S-CFG is chained too
    ksample(comfy, late.install(model.clone()), tiny)
    assert len(late.calls) == len(without.calls)


def test_default_blocks_per_family(comfy, dits):
    layout = comfy.pack.nodes.scfg_dit.DitLayout
    sd3 = layout("SD3", "joint", "joint_blocks", True, 0.4, "")
    flux = layout("Flux", "joint", "double_blocks", False, None, "", extra_blocks="single_blocks")

    class Blocks:
        def __init__(self, **counts):
            for key, count in counts.items():
                setattr(self, key, [None] * count)

    assert sd3.default_blocks(Blocks(joint_blocks=24)) == (8, 9, 10, 11)  # Seg4Diff: block 9 of 24
    assert flux.default_blocks(Blocks(double_blocks=19, single_blocks=38)) == (15, 16, 17, 18)  # ConceptAttention
    assert flux.calls(Blocks(double_blocks=19, single_blocks=38)) == 57
    assert sd3.default_blocks(Blocks(joint_blocks=2)) == (0, 1)


@pytest.mark.parametrize(
    "layers, fragment",
    [
        ("1/4", "map sizes such as '1/4' select UNet layers"),
        ("0-5", "has 2 blocks S-CFG can read"),
        ("x", "block indices"),
    ],
)
def test_bad_layers_on_a_dit_name_the_input(comfy, dits, layers, fragment):
    with pytest.raises(ValueError, match=f"layers = .*{fragment}"):
        scfg(comfy, dits.sd3().patcher, layers=layers)


def test_layers_text_is_validated_before_running(comfy):
    node = comfy.pack.nodes.scfg.SCFG
    values = dict(rate_min=0.8, rate_max=3.0, scale_cap=15.0, start=0.0, end=1.0)
    assert node.VALIDATE_INPUTS(**values, layers="8-11, 14") is True
    assert node.VALIDATE_INPUTS(**values, layers="auto (1/4 + 1/8)") is True
    assert "layers" in node.VALIDATE_INPUTS(**values, layers="middle")


def test_a_video_latent_with_frames_is_refused(comfy, dits):
    tiny = dits.wan21(frames=3)
    with pytest.raises(ValueError, match="S-CFG works on images: this latent has 3 frames"):
        ksample(comfy, scfg(comfy, tiny.patcher), tiny)


def test_cfg_one_on_a_dit_says_it_needs_the_uncond_pass(comfy, dits):
    tiny = dits.sd3()
    with pytest.raises(ValueError, match="S-CFG .* cfg"):
        ksample(comfy, scfg(comfy, tiny.patcher), tiny, cfg=1.0)


@pytest.mark.parametrize("name", ["sd3", "qwen_image", "wan21"])
def test_regions_node_draws_a_dit(comfy, dits, name):
    tiny = dits.FAMILIES[name]()
    node = comfy.pack.nodes.scfg.SCFGRegions()
    image = node.show(scfg(comfy, tiny.patcher), tiny.positive, tiny.negative, {"samples": tiny.latent}, 0, 3, S0,
                      "euler", "simple", 1)[0]  # fmt: skip
    assert image.ndim == 4 and image.shape[-1] == 3 and image.shape[2] > image.shape[1]
    assert 0.0 <= image.min() and image.max() <= 1.0 and image.std() > 0.02


def family_clip(tokenizer):
    """The part of a CLIP object the legend uses: ComfyUI's own tokenizer of a family and its tokenize."""
    import types

    return types.SimpleNamespace(tokenizer=tokenizer, tokenize=tokenizer.tokenize_with_weights)


def test_legend_of_sd3_is_clip_then_t5_positions(comfy):
    from comfy.text_encoders.sd3_clip import SD3Tokenizer

    labels = comfy.pack.nodes.scfg.token_labels(family_clip(SD3Tokenizer()), "a red fox")
    assert [labels[i] for i in range(5)] == ["<start>", "a", "red", "fox", "<end>"] and labels[76] == "<end>"
    t5 = ["<space>", "a", "red", "<space>", "fox", "<end>", "<pad>"]  # T5's own pieces ("\u2581", "a", ...), no start
    assert [labels[i] for i in range(77, 84)] == t5
    assert len(labels) == 154  # as SD3's 77 + 77 context


def test_legend_of_flux_is_the_t5_positions(comfy):
    from comfy.text_encoders.flux import FluxTokenizer

    labels = comfy.pack.nodes.scfg.token_labels(family_clip(FluxTokenizer()), "a red fox")
    assert [labels[i] for i in range(7)] == ["<space>", "a", "red", "<space>", "fox", "<end>", "<pad>"]
    assert len(labels) == 256  # Flux pads T5 to 256
