# Copyright 2025 The aetnet developers.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.
"""
LoRA (PEFT) on AETNet with `AETNetTrainer`, the recipe of the README: adapters in every encoder's attention (the
momentum copies get the same adapters, so that the EMA pairs online and momentum parameters one to one), the heads
and projections as `modules_to_save`. The alignment objectives keep training, the trainer sees AETNet inside the
PEFT wrapper (per-term logs, an AETNet card), and the saved adapter reloads to the same logits.
"""

import torch
from conftest import tiny_config, tiny_documents
from peft import LoraConfig, PeftModel, get_peft_model

from aetnet import AETNetForTokenClassification, AETNetTrainer, AETNetTrainingArguments
from aetnet.data_collator import AETNetDataCollator


# LayoutLMv3 and RoBERTa name their attention projections query/value, transformers 5's ViT q_proj/v_proj.
LORA = dict(
    r=4,
    lora_alpha=8,
    target_modules=["query", "value", "q_proj", "v_proj"],
    modules_to_save=["classifier", "vision_proj", "text_proj", "vision_proj_m", "text_proj_m"],
)


def make_model() -> AETNetForTokenClassification:
    torch.manual_seed(0)
    return AETNetForTokenClassification(tiny_config())


def test_lora_trains_the_objectives_logs_them_and_reloads(tmp_path):
    model = make_model()
    peft_model = get_peft_model(model, LoraConfig(**LORA))
    model.aetnet.freeze_momentum()  # PEFT marks every adapter trainable, the momentum copies' too
    before = {name: param.detach().clone() for name, param in peft_model.named_parameters()}
    args = AETNetTrainingArguments(
        output_dir=str(tmp_path / "run"),
        report_to="none",
        use_cpu=True,
        max_steps=3,
        per_device_train_batch_size=4,
        learning_rate=1e-2,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = AETNetTrainer(
        model=peft_model, args=args, train_dataset=tiny_documents(8), data_collator=AETNetDataCollator()
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
    batch = AETNetDataCollator()(tiny_documents(2))
    batch.pop("labels")
    with torch.no_grad():
        torch.testing.assert_close(reloaded(**batch).logits, peft_model.eval()(**batch).logits)
