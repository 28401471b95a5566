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
"""The own fields of a config, to build a config of another class (a pre-training config, a stock sub-config) from it."""

from transformers import PreTrainedConfig


def own_fields(config: PreTrainedConfig) -> dict:
    """`config.to_dict()` without what it adds about the config's class and version (`model_type`,
    `transformers_version`, `architectures`), so that another config class can take the rest as its arguments."""
    values = config.to_dict()
    for key in ("model_type", "transformers_version", "architectures"):
        values.pop(key, None)
    return values


__all__ = ["own_fields"]
