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
Training AETNet with `transformers.Trainer`: [`AETNetTrainer`] and its arguments, the callbacks it installs, gradient
clipping by part, the model card it writes, loss-curve plots and the pipeline code it saves next to a checkpoint.
Nothing here is shipped with a checkpoint, and nothing here imports the inference, command-line or drawing code.
"""

from .callbacks import (
    AugmentationStepCallback,
    DistillationRampCallback,
    MomentumUpdateCallback,
    NonFiniteGradientGuard,
    TemperatureRangeCallback,
)
from .custom_pipelines import custom_pipelines_entry, save_custom_pipelines
from .gradient_clipping import clip_gradient_parts, gradient_parts
from .modelcard import generate_model_card
from .plots import loss_curves, plot_loss_curves
from .trainer_aetnet import AETNetTrainer
from .training_args_aetnet import AETNetTrainingArguments


__all__ = [
    "AETNetTrainer",
    "AETNetTrainingArguments",
    "AugmentationStepCallback",
    "DistillationRampCallback",
    "MomentumUpdateCallback",
    "NonFiniteGradientGuard",
    "TemperatureRangeCallback",
    "clip_gradient_parts",
    "custom_pipelines_entry",
    "generate_model_card",
    "gradient_parts",
    "loss_curves",
    "plot_loss_curves",
    "save_custom_pipelines",
]
