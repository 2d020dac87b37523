import pytest
import torch
import torch.nn.functional as F
from transformers import AutoProcessor

from projects.siglip_sam_dementia.audio_features import LogMelCache, LogMelParams
from projects.siglip_sam_dementia.config import TrainingConfig
from projects.siglip_sam_dementia.data_processor import DementiaCollator, build_datasets
from projects.siglip_sam_dementia.fusion import masked_mean, to_padded
from projects.siglip_sam_dementia.losses import FocalLoss, build_loss, dementia_probability
from projects.siglip_sam_dementia.model import DementiaClassifier
from projects.siglip_sam_dementia.sam_optimizer import SAM
from shared.amp import AmpPolicy
from shared.checkpoint import load_model_state, save_checkpoint
from shared.optim import build_optimizer
from shared.sam import OptimizationStep


@pytest.fixture(scope="module")
def items(corpus_dir, tmp_path_factory):
    config = TrainingConfig(data_dir=str(corpus_dir), parser="English", n_mels=32, window_seconds=2.5)
    datasets, _ = build_datasets(config, LogMelCache(tmp_path_factory.mktemp("cache"), LogMelParams(n_mels=32)))
    return [datasets["train"][i] for i in range(6)]


def batch_for(model, model_dir, items, modality="multimodal"):
    collator = DementiaCollator(AutoProcessor.from_pretrained(model_dir), modality, model.text_max_length)
    return collator(items)


def test_sam_optimizer_module_reexports_the_shared_sam():
    import shared.sam

    assert SAM is shared.sam.SAM


@pytest.mark.parametrize("fusion, num_logits", [("concat", 2), ("gated", 2), ("cross_attention", 2), ("concat", 1)])
def test_forward_shapes_for_every_fusion(tiny_model_dir, items, fusion, num_logits):
    model = DementiaClassifier(str(tiny_model_dir), fusion=fusion, num_logits=num_logits)
    batch = batch_for(model, tiny_model_dir, items)
    assert batch["inputs"]["pixel_values"].shape[0] > len(items)  # several windows per recording
    assert model(**batch["inputs"]).shape == (len(items), num_logits)


def test_fusion_modules_exist_only_where_used(tiny_model_dir):
    def names(**kw):
        return {n.split(".")[0] for n, _ in DementiaClassifier(str(tiny_model_dir), **kw).named_parameters()}

    assert names() == {"vision_tower", "text_tower", "classifier"}
    assert names(fusion="gated") == {"vision_tower", "text_tower", "fusion", "classifier"}
    assert names(modality="audio") == {"vision_tower", "classifier"}
    assert names(modality="text") == {"text_tower", "classifier"}
    every = {n for n, _ in DementiaClassifier(str(tiny_model_dir), fusion="cross_attention").named_parameters()}
    assert not any("lang" in n for n in every)  # no language-ID embedding anywhere


@pytest.mark.parametrize("optimizer, fusion", [("adamw", "concat"), ("lion", "gated"), ("sam", "cross_attention")])
def test_every_trainable_parameter_changes_after_one_step(tiny_model_dir, items, optimizer, fusion):
    torch.manual_seed(0)
    model = DementiaClassifier(str(tiny_model_dir), fusion=fusion)
    batch = batch_for(model, tiny_model_dir, items)
    opt = build_optimizer(optimizer, model, lr=1e-3, weight_decay=0.0)
    trainable = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    assert {id(p) for p in model.parameters() if p.requires_grad} == in_optimizer
    stepper = OptimizationStep(model, opt)
    stepper.step(lambda b: F.cross_entropy(model(**b["inputs"]), b["labels"]), [batch])
    unchanged = [n for n, p in model.named_parameters() if n in trainable and torch.equal(p, trainable[n])]
    assert unchanged == []


def test_freeze_flags_keep_towers_out_of_the_optimizer(tiny_model_dir, items):
    model = DementiaClassifier(str(tiny_model_dir), freeze_vision=True)
    opt = build_optimizer("adamw", model, lr=1e-3, weight_decay=0.0)
    in_optimizer = {id(p) for g in opt.param_groups for p in g["params"]}
    assert not any(id(p) in in_optimizer for p in model.vision_tower.parameters())
    assert all(id(p) in in_optimizer for p in model.text_tower.parameters())
    before = [p.clone() for p in model.vision_tower.parameters()]
    batch = batch_for(model, tiny_model_dir, items)
    OptimizationStep(model, opt).step(lambda b: F.cross_entropy(model(**b["inputs"]), b["labels"]), [batch])
    assert all(torch.equal(a, b) for a, b in zip(before, model.vision_tower.parameters()))
    text_frozen = DementiaClassifier(str(tiny_model_dir), freeze_text=True)
    assert not any(p.requires_grad for p in text_frozen.text_tower.parameters())
    assert all(p.requires_grad for p in text_frozen.vision_tower.parameters())


@pytest.mark.parametrize("optimizer", ["adamw", "lion", "sam"])
def test_mixed_precision_steps_with_every_optimizer(tiny_model_dir, items, optimizer):
    torch.manual_seed(0)
    model = DementiaClassifier(str(tiny_model_dir))
    batch = batch_for(model, tiny_model_dir, items)
    opt = build_optimizer(optimizer, model, lr=1e-3, weight_decay=0.01)
    stepper = OptimizationStep(model, opt, AmpPolicy.create("cpu", enabled=True))
    assert stepper.amp.dtype == torch.bfloat16
    seen = []

    def loss_fn(b):
        logits = model(**b["inputs"])
        seen.append(logits.dtype)
        return F.cross_entropy(logits, b["labels"])

    head_before = model.classifier[-1].weight.detach().clone()
    losses = [stepper.step(loss_fn, [batch]) for _ in range(3)]
    assert torch.bfloat16 in seen  # autocast really ran
    assert all(not r.skipped and torch.isfinite(torch.tensor(r.loss)) for r in losses)
    assert not torch.equal(head_before, model.classifier[-1].weight)


def test_recording_prediction_does_not_depend_on_its_batch_mates(tiny_model_dir, items):
    """Window padding and pooling are masked: a recording scores the same alone or in a batch."""
    torch.manual_seed(0)
    model = DementiaClassifier(str(tiny_model_dir), fusion="cross_attention").eval()
    with torch.no_grad():
        together = model(**batch_for(model, tiny_model_dir, items)["inputs"])
        alone = torch.cat([model(**batch_for(model, tiny_model_dir, [item])["inputs"]) for item in items])
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=1e-4)


def test_padding_and_masked_mean_pool_each_recording_over_its_own_windows():
    windows = torch.arange(12.0).reshape(6, 2)
    owner = torch.tensor([0, 2, 0, 2, 2, 1])
    padded, mask = to_padded(windows, owner, batch_size=4)
    assert padded.shape == (4, 3, 2) and mask.sum(1).tolist() == [2, 1, 3, 0]
    pooled = masked_mean(padded, mask)
    torch.testing.assert_close(pooled[0], windows[[0, 2]].mean(0))
    torch.testing.assert_close(pooled[2], windows[[1, 3, 4]].mean(0))
    torch.testing.assert_close(pooled[3], torch.zeros(2))


def test_saved_state_reloads_strictly_into_a_fresh_model(tiny_model_dir, items, tmp_path):
    torch.manual_seed(0)
    model = DementiaClassifier(str(tiny_model_dir), fusion="gated", num_logits=1)
    with torch.no_grad():
        model.classifier[-1].bias.fill_(0.3)  # differs from a fresh init
    save_checkpoint(tmp_path / "best_model.pth", {"model_state_dict": model.state_dict()})
    fresh = DementiaClassifier(str(tiny_model_dir), fusion="gated", num_logits=1)
    report = load_model_state(fresh, tmp_path / "best_model.pth", strict=True)
    assert report.ok
    batch = batch_for(model, tiny_model_dir, items)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(**batch["inputs"]), model.eval()(**batch["inputs"]))


def test_focal_loss_reduces_to_cross_entropy_and_weights_classes():
    logits, labels = torch.randn(16, 2), torch.randint(0, 2, (16,))
    torch.testing.assert_close(FocalLoss(gamma=0.0)(logits, labels), F.cross_entropy(logits, labels))
    per_sample = F.cross_entropy(logits, labels, reduction="none")
    p_true = torch.exp(-per_sample)
    torch.testing.assert_close(FocalLoss(gamma=2.0)(logits, labels), ((1 - p_true) ** 2 * per_sample).mean())
    weights = torch.where(labels == 1, 0.8, 0.2)
    torch.testing.assert_close(FocalLoss(gamma=0.0, alpha=0.8)(logits, labels), (weights * per_sample).mean())
    assert isinstance(build_loss("focal", 1.0, 0.25), FocalLoss) and build_loss("focal", 1.0, 0.25).alpha == 0.25


def test_bce_uses_one_logit_and_its_sigmoid_everywhere():
    logit = torch.randn(8, 1)
    labels = torch.randint(0, 2, (8,))
    torch.testing.assert_close(build_loss("bce")(logit, labels),
                               F.binary_cross_entropy(torch.sigmoid(logit.squeeze(1)), labels.float()))
    torch.testing.assert_close(dementia_probability(logit), torch.sigmoid(logit.squeeze(1)))
    two = torch.randn(8, 2)
    torch.testing.assert_close(dementia_probability(two), torch.softmax(two, -1)[:, 1])
    with pytest.raises(ValueError, match="unknown loss_type 'hinge'"):
        build_loss("hinge")


@pytest.mark.parametrize("optimizer", ["adamw", "sam"])
def test_siglip_norms_biases_and_embeddings_are_not_decayed(tiny_model_dir, optimizer):
    model = DementiaClassifier(str(tiny_model_dir), fusion="cross_attention")
    opt = build_optimizer(optimizer, model, lr=1e-3, weight_decay=0.05)
    decay_of = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    no_decay = {f"{m}.{n}" if m else n for m, module in model.named_modules()
                if isinstance(module, (torch.nn.LayerNorm, torch.nn.Embedding))
                for n, _ in module.named_parameters(recurse=False)}
    for name, param in model.named_parameters():
        # in_proj_bias: nn.MultiheadAttention's packed bias (SigLIP2's pooling head, cross-attention fusion)
        expected = 0.0 if name in no_decay or name.endswith("bias") else 0.05
        assert decay_of[id(param)] == expected, name
    assert "vision_tower.post_layernorm.weight" in no_decay and "text_tower.final_layer_norm.weight" in no_decay


def test_gradient_checkpointing_gives_the_same_outputs_and_gradients_and_recomputes(tiny_model_dir, items):
    def run(checkpointing: bool):
        torch.manual_seed(0)
        model = DementiaClassifier(str(tiny_model_dir), gradient_checkpointing=checkpointing).train()
        calls = {"vision": 0, "text": 0}
        # count the first layer's MLP runs (module hooks do not fire in torch's recompute, so wrap forward)
        for tower, name in ((model.vision_tower, "vision"), (model.text_tower, "text")):
            mlp = tower.encoder.layers[0].mlp

            def counted(*args, _forward=mlp.forward, _name=name, **kwargs):
                calls[_name] += 1
                return _forward(*args, **kwargs)

            mlp.forward = counted
        batch = batch_for(model, tiny_model_dir, items)
        torch.manual_seed(1)  # the classifier's dropout draws the same mask in both runs
        logits = model(**batch["inputs"])
        F.cross_entropy(logits, batch["labels"]).backward()
        return logits.detach(), {n: p.grad for n, p in model.named_parameters()}, calls

    plain_logits, plain_grads, plain_calls = run(False)
    logits, grads, calls = run(True)
    torch.testing.assert_close(logits, plain_logits, rtol=1e-5, atol=1e-6)
    assert grads.keys() == plain_grads.keys()
    for name, grad in plain_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)
    assert plain_calls == {"vision": 1, "text": 1}
    assert calls == {"vision": 2, "text": 2}  # both towers' layers ran again in backward
