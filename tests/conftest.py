"""Shared fixtures: tiny models (saved, then loaded through the real loader) and data paths."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from tests import tiny_models  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("TAUDIT_SHARED", REPO.parent / "shared"))
SHARED_DATA = SHARED / "data"


def shared_file(rel: str) -> Path:
    """A file under ../shared/data, or skip the test when it is absent."""
    p = SHARED_DATA / rel
    if not p.exists():
        pytest.skip(f"shared dataset {rel} not available")
    return p


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def bert_mlm_path(tiny_dir: Path) -> Path:
    return tiny_models.build_bert(tiny_dir / "bert-mlm", "masked-lm")


@pytest.fixture(scope="session")
def bert_encoder_path(tiny_dir: Path) -> Path:
    return tiny_models.build_bert(tiny_dir / "bert-enc", "encoder")


@pytest.fixture(scope="session")
def bert_classifier_path(tiny_dir: Path) -> Path:
    return tiny_models.build_bert(tiny_dir / "bert-cls", "classifier")


@pytest.fixture(scope="session")
def roberta_mlm_path(tiny_dir: Path) -> Path:
    return tiny_models.build_roberta(tiny_dir / "roberta-mlm")


@pytest.fixture(scope="session")
def gpt2_path(tiny_dir: Path) -> Path:
    return tiny_models.build_gpt2(tiny_dir / "gpt2")


@pytest.fixture(scope="session")
def llama_path(tiny_dir: Path) -> Path:
    return tiny_models.build_llama(tiny_dir / "llama")


@pytest.fixture(scope="session")
def bert_mlm(bert_mlm_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(bert_mlm_path, device="cpu")


@pytest.fixture(scope="session")
def roberta_mlm(roberta_mlm_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(roberta_mlm_path, device="cpu")


@pytest.fixture(scope="session")
def gpt2(gpt2_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(gpt2_path, device="cpu")


@pytest.fixture(scope="session")
def llama(llama_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(llama_path, device="cpu")


@pytest.fixture(scope="session")
def bert_encoder(bert_encoder_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(bert_encoder_path, device="cpu")


@pytest.fixture(scope="session")
def bert_classifier(bert_classifier_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(bert_classifier_path, device="cpu")


@pytest.fixture(scope="session")
def turkish_bert_path(tiny_dir: Path) -> Path:
    return tiny_models.build_turkish_bert(tiny_dir / "turkish-bert-mlm")


@pytest.fixture(scope="session")
def turkish_llama_path(tiny_dir: Path) -> Path:
    return tiny_models.build_turkish_llama(tiny_dir / "turkish-llama")


@pytest.fixture(scope="session")
def turkish_bert(turkish_bert_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(turkish_bert_path, device="cpu")


@pytest.fixture(scope="session")
def turkish_llama(turkish_llama_path: Path):  # type: ignore[no-untyped-def]
    from audit.models import load_model

    return load_model(turkish_llama_path, device="cpu")
