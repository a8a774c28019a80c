"""Probe batches (hooks, shapes, inference), output selection and the default loss."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import pytest
import torch
from torch import nn

from gradscope.errors import ProbeError
from gradscope.loading import ModelFileHooks
from gradscope.probes import (
    DEFAULT_LOSS_NAME,
    batch_size_of,
    build_batches,
    call_model,
    default_loss,
    select_output,
    to_device,
)

CPU = torch.device("cpu")
NO_HOOKS = ModelFileHooks()


def batches_for(model: nn.Module, hooks: ModelFileHooks = NO_HOOKS, **kwargs: Any) -> list[Any]:
    options: dict[str, Any] = {"n": 2, "batch_size": 4, "seed": 0, "device": CPU}
    options.update(kwargs)
    return build_batches(model, hooks, **options)


def probe_error(model: nn.Module, hooks: ModelFileHooks = NO_HOOKS, **kwargs: Any) -> str:
    with pytest.raises(ProbeError) as info:
        batches_for(model, hooks, **kwargs)
    return str(info.value)


class TokenModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(11, 8)
        self.head = nn.Linear(8, 3)

    def forward(self, ids: torch.Tensor) -> Any:
        return self.head(self.emb(ids))


class LSTMModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.rnn = nn.LSTM(5, 7, batch_first=True)

    def forward(self, x: torch.Tensor) -> Any:
        return self.rnn(x)


# -- inference from the first layer --------------------------------------------------------------------------


def test_embedding_gives_token_ids_in_vocab() -> None:
    model = TokenModel()
    batches = batches_for(model, n=3, seq_len=9)
    assert len(batches) == 3
    for batch in batches:
        assert batch.shape == (4, 9) and batch.dtype == torch.int64
        assert int(batch.min()) >= 0 and int(batch.max()) < 11
    assert call_model(model, batches[0]).shape == (4, 9, 3)


def test_linear_after_pass_through_layers() -> None:
    model = nn.Sequential(nn.Dropout(0.1), nn.Linear(6, 2), nn.Tanh())
    batch = batches_for(model)[0]
    assert batch.shape == (4, 6) and batch.dtype == torch.float32


def test_conv2d_uses_image_size() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    assert batches_for(model, image_size=10)[0].shape == (4, 3, 10, 10)


def test_lstm_batch_first() -> None:
    model = LSTMModel()
    batch = batches_for(model, seq_len=6)[0]
    assert batch.shape == (4, 6, 5)
    assert batches_for(nn.LSTM(5, 7), seq_len=6)[0].shape == (6, 4, 5)


def test_transformer_encoder_layer() -> None:
    layer = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16, batch_first=True)
    model = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
    batch = batches_for(model, seq_len=5)[0]
    assert batch.shape == (4, 5, 8)
    assert call_model(model, batch).shape == (4, 5, 8)
    seq_first = nn.TransformerEncoderLayer(d_model=8, nhead=2, dim_feedforward=16)
    assert batches_for(seq_first, seq_len=5)[0].shape == (5, 4, 8)


def test_float_dtype_follows_model() -> None:
    model = nn.Linear(3, 1).to(torch.float64)
    assert batches_for(model)[0].dtype == torch.float64


def test_unknown_first_layer() -> None:
    model = nn.Sequential(nn.PixelShuffle(2), nn.Linear(4, 2))
    message = probe_error(model)
    assert "first layer '0' (PixelShuffle)" in message
    assert "--input-shape" in message and "example_inputs()" in message


def test_padding_and_flatten_are_looked_past() -> None:
    assert batches_for(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)))[0].shape == (4, 4)
    padded = nn.Sequential(nn.ReflectionPad2d(3), nn.Conv2d(3, 8, 7), nn.ReLU())
    assert batches_for(padded, image_size=10)[0].shape == (4, 3, 10, 10)


def test_lazy_first_layer() -> None:
    assert "LazyLinear" in probe_error(nn.Sequential(nn.LazyLinear(3)))


# -- the first layer forward() calls, forward()'s other arguments, layouts -----------------------------------


class EmbeddingRegisteredLast(nn.Transformer):
    """Like word_language_model's TransformerModel: an nn.Transformer whose forward(src, flag) takes token ids, and
    whose embedding is registered after the encoder it feeds."""

    def __init__(self) -> None:
        super().__init__(d_model=8, nhead=2, dim_feedforward=16, num_encoder_layers=1, num_decoder_layers=1)
        self.emb = nn.Embedding(13, 8)
        self.decoder = nn.Linear(8, 13)  # type: ignore[assignment]

    def forward(self, src: torch.Tensor, has_mask: bool = True) -> Any:  # type: ignore[override]
        return self.decoder(self.encoder(self.emb(src)))


class ForwardForwardLayer(nn.Linear):
    """Like pytorch/examples' mnist_forward_forward ``Layer``: a Linear subclass with a ReLU child, its own
    forward(), and a ``train`` method that trains it (so ``model.train()`` fails on it, in torch as here)."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__(n_in, n_out)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(torch.mm(x / (x.norm(2, 1, keepdim=True) + 1e-4), self.weight.T) + self.bias)

    def train(self, x_pos: torch.Tensor, x_neg: torch.Tensor) -> None:  # type: ignore[override]
        raise AssertionError("gradscope must not call the model's own training method")


def test_a_layer_subclass_whose_children_keep_the_shape_is_read_as_its_base() -> None:
    model = nn.Sequential(ForwardForwardLayer(12, 8), ForwardForwardLayer(8, 8))
    assert batches_for(model)[0].shape == (4, 12)


class SequenceFirstLM(nn.Module):
    def __init__(self, with_init: bool) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 6)
        self.rnn = nn.GRU(6, 5)
        if with_init:
            self.init_hidden = lambda bsz: torch.zeros(1, bsz, 5)

    def forward(self, tokens, hidden):  # type: ignore[no-untyped-def]  # unannotated, as in the examples
        out, hidden = self.rnn(self.emb(tokens), hidden)
        return out, hidden


def test_the_layer_forward_calls_first_decides_the_inputs() -> None:
    model = EmbeddingRegisteredLast()
    batches = batches_for(model, seq_len=7)
    assert isinstance(batches[0], torch.Tensor), "one input, not nn.Transformer's (src, tgt)"
    assert batches[0].shape == (7, 4) and batches[0].dtype == torch.int64 and int(batches[0].max()) < 13
    assert batches.batch_dim == 1 and "batch_first=False" in batches.assumed[0]
    assert call_model(model, batches[0]).shape == (7, 4, 13)
    assert batch_size_of(batches[0], batches.batch_dim) == 4


@pytest.mark.parametrize("with_init", [False, True])
def test_required_hidden_is_supplied(with_init: bool) -> None:
    model = SequenceFirstLM(with_init)
    batches = batches_for(model, seq_len=6)
    tokens, hidden = batches[0]
    assert tokens.shape == (6, 4) and batches.batch_dim == 1
    if with_init:
        assert hidden.shape == (1, 4, 5) and "hidden = model.init_hidden(4)" in batches.assumed
    else:
        assert hidden is None and "hidden = None" in batches.assumed
    call_model(model, batches[0])[0].sum().backward()


def test_a_required_argument_that_cannot_be_none_is_named_with_the_fix() -> None:
    class Annotated(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2)

        def forward(self, x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
            return self.fc(x) * scale

    message = probe_error(Annotated())
    assert "'scale'" in message and "def example_inputs(): return (torch.randn(4, 3), <scale>)" in message


def test_seq2seq_second_input_is_drawn_like_the_first() -> None:
    class Seq2Seq(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.src_emb = nn.Embedding(30, 8)
            self.tgt_emb = nn.Embedding(9, 8)
            self.core = nn.Transformer(8, 2, 1, 1, 16, batch_first=True)

        def forward(self, src, tgt):  # type: ignore[no-untyped-def]
            return self.core(self.src_emb(src), self.tgt_emb(tgt))

    model = Seq2Seq()
    src, tgt = batches_for(model, seq_len=5)[0]
    assert src.shape == tgt.shape == (4, 5) and int(tgt.max()) < 9
    assert call_model(model, (src, tgt)).shape == (4, 5, 8)


def test_transposed_convolution_gets_a_latent() -> None:
    generator = nn.Sequential(nn.ConvTranspose2d(10, 4, 4, 1, 0), nn.ReLU(), nn.ConvTranspose2d(4, 1, 4, 2, 1))
    batches = batches_for(generator)
    assert batches[0].shape == (4, 10, 1, 1) and "1×1 latent" in batches.assumed[0]
    assert generator(batches[0]).shape == (4, 1, 8, 8)
    cropping = nn.Sequential(nn.ConvTranspose2d(3, 3, 3, padding=2))  # a 1×1 input would leave nothing
    assert batches_for(cropping, image_size=8)[0].shape == (4, 3, 8, 8)


def test_context_length_caps_the_sequence() -> None:
    model = TokenModel()
    model.config = {"block_size": 5}  # type: ignore[assignment]
    batches = batches_for(model, seq_len=32)
    assert batches[0].shape == (4, 5) and "block_size" in batches.assumed[0]


def test_user_batches_of_a_sequence_first_model_report_dimension_1() -> None:
    hooks = ModelFileHooks(example_inputs=lambda: (torch.randint(0, 20, (35, 3)), None))
    batches = batches_for(SequenceFirstLM(False), hooks)
    assert batches.batch_dim == 1 and batches.assumed == ()
    assert batch_size_of(batches[0], batches.batch_dim) == 3


# -- --input-shape / --input-dtype ---------------------------------------------------------------------------


def test_input_shape_with_int_dtype_for_embedding() -> None:
    batches = batches_for(TokenModel(), input_shapes=[(2, 7)], input_dtype="int64")
    assert batches[0].shape == (2, 7) and batches[0].dtype == torch.int64
    assert int(batches[0].max()) < 11


def test_input_shape_of_an_embedding_model_is_token_ids() -> None:
    batches = batches_for(EmbeddingRegisteredLast(), input_shapes=[(9, 2)])
    assert batches[0].dtype == torch.int64 and int(batches[0].max()) < 13
    assert batches.batch_dim == 1 and any("int64 token ids below 13" in note for note in batches.assumed)
    hidden = batches_for(SequenceFirstLM(True), input_shapes=[(9, 3)])
    assert hidden[0][1].shape == (1, 3, 5)


def test_input_shape_int_dtype_without_embedding_is_binary() -> None:
    batch = batches_for(nn.Linear(50, 1), input_shapes=[(8, 50)], input_dtype="int64")[0]
    assert set(batch.unique().tolist()) <= {0, 1}


def test_several_input_shapes_make_a_tuple() -> None:
    batch = batches_for(nn.Bilinear(3, 4, 2), input_shapes=[(5, 3), (5, 4)], input_dtype="float16")[0]
    assert isinstance(batch, tuple) and [t.shape for t in batch] == [(5, 3), (5, 4)]
    assert all(t.dtype == torch.float16 for t in batch)


def test_bad_dtype_and_shape() -> None:
    assert "--input-dtype" in probe_error(nn.Linear(2, 2), input_dtype="int8")
    assert "--input-shape" in probe_error(nn.Linear(2, 2), input_shapes=[(0, 2)])


# -- user hooks ----------------------------------------------------------------------------------------------


def test_example_inputs_reused() -> None:
    calls: list[int] = []

    def example_inputs() -> dict[str, torch.Tensor]:
        calls.append(1)
        return {"x": torch.ones(3, 2)}

    batches = batches_for(nn.Linear(2, 2), ModelFileHooks(example_inputs=example_inputs), n=4)
    assert len(batches) == 4 and len(calls) == 1
    assert all(torch.equal(b["x"], torch.ones(3, 2)) for b in batches)


def test_probe_batches_priority_and_count() -> None:
    def probe_batches(n: int, seed: int) -> Any:
        g = torch.Generator().manual_seed(seed)
        while True:  # endless: only n are taken
            yield (torch.randn(2, 3, generator=g),)

    hooks = ModelFileHooks(example_inputs=lambda: torch.zeros(1, 3), probe_batches=probe_batches)
    batches = batches_for(nn.Linear(3, 1), hooks, n=3)
    assert len(batches) == 3 and isinstance(batches[0], tuple) and batches[0][0].shape == (2, 3)


def test_probe_batches_too_few() -> None:
    hooks = ModelFileHooks(probe_batches=lambda n, seed: [torch.zeros(2, 3)])
    message = probe_error(nn.Linear(3, 1), hooks, n=3)
    assert "yielded 1" in message and "expected 3" in message


def test_nan_in_batch() -> None:
    hooks = ModelFileHooks(example_inputs=lambda: (torch.tensor([[1.0, float("nan")]]),))
    message = probe_error(nn.Linear(2, 1), hooks)
    assert message.startswith("probe batch 0 (example_inputs) contains NaN values")
    inf = {"x": torch.full((1, 2), float("inf"))}
    hooks = ModelFileHooks(probe_batches=lambda n, seed: [torch.zeros(1, 2), inf])
    assert probe_error(nn.Linear(2, 1), hooks).startswith("probe batch 1 (probe_batches) contains Inf values")


def test_bad_batch_type_and_raising_hook() -> None:
    assert "probe batch 0 (example_inputs) is a int" in probe_error(
        nn.Linear(2, 1), ModelFileHooks(example_inputs=lambda: 3)
    )

    def broken() -> Any:
        raise ValueError("no data")

    assert "example_inputs() raised ValueError: no data" in probe_error(
        nn.Linear(2, 1), ModelFileHooks(example_inputs=broken)
    )


# -- determinism and the global RNG --------------------------------------------------------------------------


def test_seeded_and_global_rng_untouched() -> None:
    model = nn.Linear(5, 2)
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = batches_for(model, n=3, seed=7)
    assert torch.equal(torch.get_rng_state(), state)
    again = batches_for(model, n=3, seed=7)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not torch.equal(first[0], first[1])  # batch i uses seed + i
    assert torch.equal(batches_for(model, n=1, seed=8)[0], first[1])
    default_loss(torch.ones(2, 2, requires_grad=True), seed=3, batch_index=0)
    assert torch.equal(torch.get_rng_state(), state)


# -- calling the model and selecting its output --------------------------------------------------------------


def test_call_model_forms() -> None:
    class Two(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(2, 1)

        def forward(self, a: torch.Tensor, b: torch.Tensor) -> Any:
            return self.fc(a + b)

    model = Two()
    x = torch.ones(3, 2)
    assert call_model(model, (x, x)).shape == (3, 1)
    assert call_model(model, [x, x]).shape == (3, 1)
    assert call_model(model, {"a": x, "b": x}).shape == (3, 1)
    with pytest.raises(TypeError):  # forward's own errors pass through: the scanner locates them
        call_model(model, x)
    with pytest.raises(ProbeError, match="got str"):
        call_model(model, "text")


def test_select_output_tuple_from_lstm() -> None:
    model = LSTMModel()
    output = call_model(model, torch.randn(2, 3, 5))
    assert select_output(output) is output[0]


def test_select_output_dict_and_logits() -> None:
    w = torch.ones(2, requires_grad=True)
    hidden, logits = w * 2, w * 3
    assert select_output({"hidden": hidden, "logits": logits}) is logits
    assert select_output({"meta": 1, "hidden": hidden}) is hidden
    assert select_output(OrderedDict(loss=None, logits=logits)) is logits

    class ModelOutput:
        def __init__(self) -> None:
            self.logits = logits

    assert select_output(ModelOutput()) is logits

    class TupleOnly:
        def to_tuple(self) -> tuple[Any, ...]:
            return (None, hidden)

    assert select_output(TupleOnly()) is hidden


def test_select_output_errors() -> None:
    with pytest.raises(ProbeError, match="returned None"):
        select_output(None)
    with pytest.raises(ProbeError, match=r"integer tensor \(torch.int64\)"):
        select_output(torch.ones(2, dtype=torch.int64))
    with pytest.raises(ProbeError, match="does not depend on any trainable parameter"):
        select_output(torch.ones(2))
    with pytest.raises(ProbeError, match="returned str"):
        select_output("text")


# -- the default loss ----------------------------------------------------------------------------------------


def test_default_loss_gradient_is_projection_over_batch() -> None:
    assert DEFAULT_LOSS_NAME == "random_projection"
    seed, index = 5, 2
    output = torch.randn(4, 3, 2, requires_grad=True)
    loss = default_loss(output, seed, index)
    (grad,) = torch.autograd.grad(loss, output)
    g = torch.Generator().manual_seed(seed * 1_000_003 + index)
    projection = torch.randn((4, 3, 2), generator=g)
    torch.testing.assert_close(grad, projection / 4)
    torch.testing.assert_close(loss, (output * projection).sum() / 4)


def test_default_loss_deterministic_and_varies() -> None:
    output = torch.randn(3, 4)
    assert torch.equal(default_loss(output, 1, 0), default_loss(output, 1, 0))
    assert not torch.equal(default_loss(output, 1, 0), default_loss(output, 1, 1))
    assert not torch.equal(default_loss(output, 1, 0), default_loss(output, 2, 0))


def test_default_loss_collapsed_half_and_scalar() -> None:
    collapsed = torch.zeros(2, 3, dtype=torch.float16, requires_grad=True)
    loss = default_loss(collapsed, 0, 0)
    assert loss.dtype == torch.float32
    (grad,) = torch.autograd.grad(loss, collapsed)
    assert grad.dtype == torch.float16 and bool((grad != 0).all())
    scalar = torch.tensor(2.0, requires_grad=True)
    (grad,) = torch.autograd.grad(default_loss(scalar, 0, 0), scalar)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(grad, torch.randn((), generator=g))


# -- small utilities -----------------------------------------------------------------------------------------


def test_batch_size_of_and_to_device() -> None:
    x = torch.zeros(6, 2)
    assert batch_size_of(x) == 6
    assert batch_size_of((torch.tensor(1.0), x)) == 6
    assert batch_size_of({"mask": None, "x": x}) == 6
    assert batch_size_of((1, 2)) is None
    moved = to_device({"x": x, "flag": True, "pair": (x, [x])}, CPU)
    assert moved["flag"] is True and isinstance(moved["pair"], tuple) and isinstance(moved["pair"][1], list)


# -- inferred images of another size ---------------------------------------------------------------------------


class FixedSizeNet(nn.Module):
    """pytorch/examples' MNIST net: its fc1 takes the features of 28×28 images only."""

    def __init__(self, norm: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, 1)
        self.norm = nn.BatchNorm2d(8) if norm else nn.Identity()
        self.conv2 = nn.Conv2d(8, 16, 3, 1)
        self.fc1 = nn.Linear(16 * 12 * 12, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.norm(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)
        return self.fc2(torch.relu(self.fc1(torch.flatten(x, 1))))


def test_inferred_images_take_the_first_size_the_model_accepts_and_leave_the_model_as_it_was() -> None:
    from gradscope.config import Config
    from gradscope.pipeline import build_probe

    torch.manual_seed(0)
    model = FixedSizeNet(norm=True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batches = build_probe(model, ModelFileHooks(), Config())
    assert tuple(batches[0].shape) == (16, 1, 28, 28)
    assert any(note.startswith("28×28 images: 32×32 did not go through the model") for note in batches.assumed)
    # the tries ran forward in train mode: BatchNorm's running statistics and counter are put back
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_images_any_size_fits_keep_the_configured_size_and_no_size_that_fits_keeps_the_first_failure() -> None:
    from gradscope.config import Config
    from gradscope.pipeline import build_probe

    pooled = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    batches = build_probe(pooled, ModelFileHooks(), Config())
    assert tuple(batches[0].shape) == (16, 3, 32, 32) and not batches.assumed
    odd = nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 5 * 5, 2))  # 7×7 images only
    batches = build_probe(odd, ModelFileHooks(), Config())
    assert tuple(batches[0].shape) == (16, 1, 32, 32) and not batches.assumed  # the scan then reports its failure
