"""Where a checkpoint comes from: a local project checkpoint or workdir, a Hugging Face LLaVA
folder, or a Hugging Face Hub repo id (the format ``export`` writes).

    hf_dir = download("owner/name")                   # safetensors, configs, tokenizer only
    ckpt = checkpoint_dir(hf_dir, "checkpoints")      # imported once (as `convert --hf_dir`)

A LLaVA folder is imported into ``converted_root/NAME-HASH`` (the hash of its resolved path, so
each Hub revision gets its own), written under a temporary name and renamed when complete: a
second call finds it and does not import again.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from basque_vlm.hf import importer
from basque_vlm.store import checkpoint

# Never a pickle (.bin, .pt, .pth, .ckpt): weights as safetensors, the rest configs and tokenizers.
DOWNLOAD_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "*.json", "*.jinja",
                     "tokenizer*", "*.model", "*.txt")
REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_repo_id(source: str | Path) -> bool:
    """Whether ``source`` reads as a Hub repo id (``owner/name``) and is not a local path."""
    return bool(REPO_ID.fullmatch(str(source))) and not Path(source).expanduser().exists()


def download(repo_id: str, *, revision: str | None = None, local_files_only: bool = False,
             cache_dir: str | Path | None = None) -> Path:
    """The local folder of a Hub model repo (Hugging Face cache; ``HF_TOKEN`` or a login for
    private repos). ``local_files_only`` uses the cached copy without contacting the Hub."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                      allow_patterns=list(DOWNLOAD_PATTERNS),
                                      local_files_only=local_files_only))
    except RepositoryNotFoundError:
        raise checkpoint.CheckpointNotFound(
            f"{repo_id}: not a local folder, nor a Hub model repo that you can read (a private "
            "repo needs HF_TOKEN or huggingface_hub.login())") from None
    except LocalEntryNotFoundError:
        if not local_files_only:
            raise  # the Hub could not be reached and nothing is cached
        raise checkpoint.CheckpointNotFound(
            f"{repo_id}: not a local folder, nor in the Hugging Face cache (download it: "
            "local_files_only=False)") from None


def checkpoint_dir(source: str | Path, converted_root: str | Path = "checkpoints",
                   dtype: np.dtype | None = None, log: Callable[[str], None] = print) -> Path:
    """A project checkpoint for ``source``: a checkpoint or a training workdir as it is, a
    ``LlavaForConditionalGeneration`` folder imported under ``converted_root`` (once)."""
    path = Path(source).expanduser()
    if not path.is_dir():
        hint = " (a Hugging Face repo id: download it first)" if is_repo_id(source) else ""
        raise checkpoint.CheckpointNotFound(f"{source}: no such folder{hint}")
    try:
        checkpoint.load_config(path)
        return path
    except checkpoint.CheckpointNotFound:
        pass  # not ours: a Hugging Face folder
    out = Path(converted_root).expanduser() / converted_name(path)
    try:
        checkpoint.load_config(out)
        log(f"{path} was already imported: {out}")
        return out
    except checkpoint.CheckpointNotFound:
        return import_llava_folder(path, out, dtype, log)


def converted_name(hf_dir: Path) -> str:
    """``NAME-HASH``: NAME the model's (``models--owner--name`` in the Hub cache), HASH the
    resolved folder's."""
    hf_dir = hf_dir.resolve()
    name = hf_dir.parent.parent.name if hf_dir.parent.name == "snapshots" else hf_dir.name
    return f"{name}-{hashlib.sha1(str(hf_dir).encode()).hexdigest()[:10]}"


def import_llava_folder(hf_dir: str | Path, out: str | Path, dtype: np.dtype | None = None,
                        log: Callable[[str], None] = print) -> Path:
    """``convert --hf_dir=HF_DIR --out=OUT``: weights (``dtype`` None keeps theirs), config,
    tokenizer and processor files. Written to ``OUT.partial``, renamed to ``out`` when done."""
    out = Path(out)
    importer.check_llava(hf_dir)  # a bad folder fails before any weight is read
    importer.load_processor(hf_dir)
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    log(f"importing {hf_dir} into {out}")
    cfg, params = importer.import_llava(hf_dir, dtype, log=log)
    checkpoint.save(partial, cfg, params)
    importer.copy_assets(hf_dir, partial)
    importer.load_processor(partial)
    partial.rename(out)
    return out
