"""
LoRA (PEFT) on AETNet with `AETNetTrainer`, the recipe of the README: adapters in every encoder's attention (the
momentum copies get the same adapters, so that the EMA pairs online and momentum parameters one to one), the heads
and projections as `modules_to_save`. The alignment objectives keep training, the trainer sees AETNet inside the
PEFT wrapper (per-term logs, an AETNet card), and the saved adapter reloads to the same logits.
"""

import torch
from peft import LoraConfig, PeftModel, get_peft_model

from aetnet import AETNetConfig, AETNetForTokenClassification
from aetnet.data_collator import AETNetDataCollator
from aetnet.trainer_aetnet import AETNetTrainer, AETNetTrainingArguments


VOCAB, SEQ_LEN, IMAGE = 99, 10, 16
# LayoutLMv3 and RoBERTa name their attention projections query/value, transformers 5's ViT q_proj/v_proj.
LORA = dict(
    r=4,
    lora_alpha=8,
    target_modules=["query", "value", "q_proj", "v_proj"],
    modules_to_save=["classifier", "vision_proj", "text_proj", "vision_proj_m", "text_proj_m"],
)


def make_model() -> AETNetForTokenClassification:
    config = AETNetConfig.from_preset("tiny", vocab_size=VOCAB, max_length=32, num_labels=3, queue_size=8)
    for sub in (config.layout_config, config.vision_config, config.text_config):
        sub.hidden_dropout_prob = sub.attention_probs_dropout_prob = 0.0
    torch.manual_seed(0)
    return AETNetForTokenClassification(config)


def make_documents(count=8) -> list[dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    documents = []
    for _ in range(count):
        input_ids = torch.randint(5, VOCAB, (SEQ_LEN,), generator=generator)
        input_ids[0], input_ids[-1] = 0, 2
        corner = torch.randint(0, 900, (SEQ_LEN, 2), generator=generator)
        bbox = torch.cat([corner, corner + 60], dim=-1)
        bbox[0] = bbox[-1] = 0
        documents.append(dict(
            input_ids=input_ids, bbox=bbox, attention_mask=torch.ones(SEQ_LEN, dtype=torch.long),
            labels=torch.randint(0, 3, (SEQ_LEN,), generator=generator),
            pixel_values=torch.randn(3, IMAGE, IMAGE, generator=generator),
        ))
    return documents


def test_lora_trains_the_objectives_logs_them_and_reloads(tmp_path):
    model = make_model()
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    model.aetnet.freeze_momentum()  # PEFT marks every adapter trainable, the momentum copies' too
    before = {name: param.detach().clone() for name, param in peft_model.named_parameters()}
    args = AETNetTrainingArguments(
        output_dir=str(tmp_path / "run"), report_to="none", use_cpu=True, max_steps=3, per_device_train_batch_size=4,
        learning_rate=1e-2, logging_steps=1, save_strategy="no", disable_tqdm=True, seed=0,
    )
    trainer = AETNetTrainer(
        model=peft_model, args=args, train_dataset=make_documents(), data_collator=AETNetDataCollator()
    )
    trainer.train()
    logs = [entry for entry in trainer.state.log_history if "loss" in entry]
    assert {"loss_task", "loss_ditc", "loss_imc", "loss_glitc", "loss_pita"} <= set(logs[0])

    after = dict(peft_model.named_parameters())
    trainable = [name for name, param in after.items() if param.requires_grad]
    assert any("vision_model." in name and "lora_B" in name for name in trainable)
    assert not any("_m." in name for name in trainable)
    assert all(not torch.equal(after[name], before[name]) for name in trainable), "an adapter did not train"
    # The aligners' adapters moved their momentum copies through the EMA.
    momentum_lora = [name for name in after if "vision_model_m." in name and "lora_B" in name]
    assert momentum_lora and all(not torch.equal(after[name], before[name]) for name in momentum_lora)

    trainer.create_model_card()
    card = (tmp_path / "run" / "README.md").read_text()
    assert "- aetnet" in card and "aetnet-baseline" not in card

    peft_model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(make_model(), tmp_path / "adapter").eval()
    batch = AETNetDataCollator()(make_documents(2))
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, peft_model.eval()(**batch).logits)
