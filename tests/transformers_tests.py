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
transformers' own common model tests (`ModelTesterMixin`, `ConfigTester`), taken at test time from the source
distribution of the installed transformers version, so that AETNet is held to what every transformers model passes.

The wheel does not ship `tests/`; the source distribution ships `tests/test_modeling_common.py` and
`tests/test_configuration_common.py` but not three helper modules they import. Those get stand-ins here, and
what the stand-ins leave out is listed in `test_modeling_aetnet_common.py`:
- `exporters/test_export.py` (`ExportTesterMixin`, the `torch.export` tests): an empty mixin;
- `generation/test_utils.py` (`GenerationTesterMixin`): an empty mixin (AETNet does not generate);
- `utils/test_configuration_utils.py` (`config_common_kwargs`): an empty dict; `ConfigTester` reads it only in
  `check_config_arguments_init`, which returns before reading it for composite configs such as AETNet's.

The download goes through pip (the package index is the one source this project may reach) into a cache folder,
`$AETNET_TRANSFORMERS_TESTS_CACHE` or `~/.cache/aetnet/transformers-tests`, once per transformers version.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import transformers


PACKAGE = "transformers_common_tests"
COMMON_FILES = ("test_modeling_common.py", "test_configuration_common.py")
STAND_INS = {
    "exporters/test_export.py": '"""Stand-in: the sdist lacks the torch.export tests."""\n\n\nclass ExportTesterMixin:\n    pass\n',
    "generation/test_utils.py": '"""Stand-in: the sdist lacks the generation tests."""\n\n\nclass GenerationTesterMixin:\n    pass\n',
    "utils/test_configuration_utils.py": '"""Stand-in: unused for composite configs."""\n\nconfig_common_kwargs = {}\n',
}


def cache_root() -> Path:
    default = Path.home() / ".cache" / "aetnet" / "transformers-tests"
    return Path(os.environ.get("AETNET_TRANSFORMERS_TESTS_CACHE", default)) / transformers.__version__


def _download_sdist(version: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:"]
    command += ["--dest", str(into), f"transformers=={version}"]
    result = subprocess.run(command, capture_output=True, text=True)
    archives = sorted(into.glob("transformers-*.tar.gz"))
    if result.returncode != 0 or not archives:
        raise RuntimeError(
            f"Could not fetch the transformers {version} source distribution for its common tests "
            f"(`{' '.join(command)}` exited {result.returncode}): {result.stderr.strip()[-2000:]}"
        )
    return archives[0]


def ensure_common_tests() -> Path:
    """Make `transformers_common_tests` importable (download once), and return its folder."""
    root = cache_root()
    package = root / PACKAGE
    if not all((package / name).exists() for name in COMMON_FILES):
        with tempfile.TemporaryDirectory() as tmp:
            archive = _download_sdist(transformers.__version__, Path(tmp))
            staging = root / f"{PACKAGE}.partial"
            staging.mkdir(parents=True, exist_ok=True)
            with tarfile.open(archive) as tar:
                for member in tar.getmembers():
                    parts = Path(member.name).parts
                    if len(parts) == 3 and parts[1] == "tests" and parts[2] in COMMON_FILES:
                        (staging / parts[2]).write_bytes(tar.extractfile(member).read())
            missing = [name for name in COMMON_FILES if not (staging / name).exists()]
            if missing:
                raise RuntimeError(f"{archive.name} has no tests/{missing}: transformers changed its layout")
            (staging / "__init__.py").write_text("")
            for relative, text in STAND_INS.items():
                path = staging / relative
                path.parent.mkdir(parents=True, exist_ok=True)
                (path.parent / "__init__.py").write_text("")
                path.write_text(text)
            if package.exists():
                shutil.rmtree(package)
            staging.replace(package)
    if str(root) not in sys.path:
        sys.path.insert(0, str(root))
    return package


__all__ = ["cache_root", "ensure_common_tests"]
