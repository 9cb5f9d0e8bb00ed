"""Image models from the hub (engines/hub.py), downloaded from a local server that speaks the
hub's API (tests/hub_server.py) and loaded through the diffusion engine's real path.

The repo served is the tiny SD pipeline laid out as SD 1.5's repo is: an fp16 variant of
every weights file, and files a download must leave alone (single-file checkpoints, ``.bin``
and EMA copies, Flax weights, a safety checker)."""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engines.config import DiffusionSettings
from engines.diffusion import DiffusionEngine, DiffusionError, EngineStatus, LoadCancelled
from engines.hub import (
    DownloadCancelled,
    DownloadProgress,
    HubError,
    HubModels,
    HubOffline,
    NotEnoughSpace,
    choose_files,
    hub_cache,
    weight_variant,
)

try:
    from hub_server import EXTRA_FILES, FakeHub, HubRepo, build_hub_repo
except ImportError:  # tests/ as a package
    from tests.hub_server import EXTRA_FILES, FakeHub, HubRepo, build_hub_repo

REPO = "tests/tiny-sd"
FP32 = [
    "model_index.json",
    "scheduler/scheduler_config.json",
    "text_encoder/config.json",
    "text_encoder/model.safetensors",
    "tokenizer/merges.txt",
    "tokenizer/tokenizer.json",
    "tokenizer/tokenizer_config.json",
    "tokenizer/vocab.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
]
FP16 = [n.replace(".safetensors", ".fp16.safetensors") for n in FP32]


@pytest.fixture(scope="session")
def hub_repo_folder(tiny_sd_folder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_hub_repo(tiny_sd_folder, tmp_path_factory.mktemp("hub-repo") / "tiny-sd")


@pytest.fixture
def hub(hub_repo_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeHub]:
    fake = FakeHub(repos={REPO: HubRepo.from_folder(hub_repo_folder)}).start()
    monkeypatch.setenv("HF_ENDPOINT", fake.url)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1")
    try:
        yield fake
    finally:
        fake.stop()


def models(tmp_path: Path, **kwargs: Any) -> HubModels:
    return HubModels(hub_cache(tmp_path / "cache"), chunk_size=64 * 1024, **kwargs)


def engine_for(tmp_path: Path, model: str = REPO, **settings: Any) -> DiffusionEngine:
    return DiffusionEngine(
        DiffusionSettings(model=model, device="cpu", **settings),
        tmp_path / "outputs",
        tmp_path / "cache",
    )


def snapshot_files(tmp_path: Path) -> list[str]:
    snapshots = tmp_path / "cache" / "hub" / "models--tests--tiny-sd" / "snapshots"
    return sorted(
        p.relative_to(d).as_posix()
        for d in snapshots.iterdir()
        for p in d.rglob("*")
        if p.is_file()
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- which files ------------------------------------------------------------------------------


def test_variants_are_read_from_the_file_names() -> None:
    assert weight_variant("unet/diffusion_pytorch_model.fp16.safetensors") == "fp16"
    assert weight_variant("unet/diffusion_pytorch_model.safetensors") is None
    assert weight_variant("unet/diffusion_pytorch_model.non_ema.bin") == "non_ema"
    assert weight_variant("text_encoder/model.fp16-00001-of-00002.safetensors") == "fp16"
    assert weight_variant("text_encoder/model-00001-of-00002.safetensors") is None
    assert weight_variant("text_encoder/model.safetensors.index.fp16.json") == "fp16"
    assert weight_variant("text_encoder/model.safetensors.index.json") is None


def test_a_repo_with_only_bin_weights_gets_bin_and_sharded_indexes_follow_the_variant() -> None:
    index = {"unet": ["diffusers", "UNet2DConditionModel"], "scheduler": ["diffusers", "X"]}
    files = [
        "model_index.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
        "unet/diffusion_pytorch_model.fp16.bin",
        "unet/diffusion_pytorch_model.ckpt",
        "scheduler/scheduler_config.json",
    ]
    chosen, variant = choose_files(files, index, fp16=False)
    assert chosen == [
        "model_index.json",
        "scheduler/scheduler_config.json",
        "unet/config.json",
        "unet/diffusion_pytorch_model.bin",
    ]
    assert variant is None
    sharded = [
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors.index.json",
        "unet/diffusion_pytorch_model-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
    ]
    chosen, variant = choose_files(sharded, {"unet": ["diffusers", "U"]}, fp16=True)
    assert variant == "fp16"
    assert chosen == [
        "unet/config.json",
        "unet/diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
        "unet/diffusion_pytorch_model.fp16-00002-of-00002.safetensors",
        "unet/diffusion_pytorch_model.safetensors.index.fp16.json",
    ]


def test_the_plan_has_only_the_files_needed_with_their_sizes(hub: FakeHub, tmp_path: Path) -> None:
    plan = models(tmp_path).plan(REPO, fp16=False)
    assert [f.path for f in plan.files] == FP32
    assert plan.variant is None
    assert plan.total == hub.repos[REPO].size(FP32)
    assert set(EXTRA_FILES) <= set(plan.skipped)
    assert all(n.endswith(".fp16.safetensors") or n in EXTRA_FILES for n in plan.skipped)

    plan16 = models(tmp_path).plan(REPO, fp16=True)
    assert [f.path for f in plan16.files] == sorted(FP16)
    assert plan16.variant == "fp16"
    assert plan16.total < plan.total
    assert "fp16 weights" in plan16.summary() and "not needed" in plan16.summary()


# -- through the diffusion engine: the app's loading path --------------------------------------


def test_a_hub_id_downloads_with_progress_then_loads(hub: FakeHub, tmp_path: Path) -> None:
    hub.rate = 3_000_000  # about two seconds: several reports, with a rate and an ETA
    seen: list[EngineStatus] = []
    engine = engine_for(tmp_path)
    engine.load(on_progress=seen.append)

    assert engine.loaded and engine.status.state == "ready"
    assert engine.status.download is None
    assert snapshot_files(tmp_path) == FP32
    fetched = {r[1].split("/resolve/", 1)[1].split("/", 1)[1] for r in hub.gets()}
    assert fetched == set(FP32)
    downloads = [s.download for s in seen if s.download is not None]
    assert len(downloads) >= 3
    assert all(
        s.describe().startswith("downloading ") and s.describe().endswith("/12 files")
        for s in seen
        if s.download is not None
    )
    totals = [d.overall.overall_completed for d in downloads]
    assert totals == sorted(totals) and totals[0] < totals[-1]
    assert downloads[-1].overall.overall_total == hub.repos[REPO].size(FP32)
    assert any(d.overall.overall_rate and d.overall.overall_eta_s is not None for d in downloads)
    in_flight = [p for d in downloads for p in d.active]
    assert any(p.digest == "unet/diffusion_pytorch_model.safetensors" for p in in_flight)
    assert any(0 < p.completed < p.total and p.rate for p in in_flight)
    assert all(0.05 <= s.progress <= 0.2 for s in seen if s.download is not None)


def test_the_fp16_variant_is_downloaded_and_loaded_for_float16(
    hub: FakeHub, tmp_path: Path
) -> None:
    engine = engine_for(tmp_path, dtype="float16")
    engine.load()
    assert engine.status.state == "ready" and engine.status.dtype == "float16"
    assert snapshot_files(tmp_path) == sorted(FP16)
    local = models(tmp_path).local(REPO, fp16=True)
    assert local is not None and local.variant == "fp16"
    # a float32 load of the same cache reads the fp16 weights there rather than download more
    assert models(tmp_path).local(REPO, fp16=False) == local


def test_a_cut_connection_is_resumed_with_a_range_request(hub: FakeHub, tmp_path: Path) -> None:
    hub.cut_after = 1_000_000
    local = models(tmp_path).pull(REPO, fp16=False)
    unet = "unet/diffusion_pytorch_model.safetensors"
    ranges = [r[2] for r in hub.gets(unet)]
    assert ranges[0] == "" and ranges[1].startswith("bytes=") and ranges[1] != "bytes=0-"
    assert sha(local.path / unet) == hub.repos[REPO].files[unet].etag


def test_files_redirected_to_a_cdn_are_followed(hub: FakeHub, tmp_path: Path) -> None:
    hub.redirect = True
    local = models(tmp_path).pull(REPO, fp16=False)
    unet = "unet/diffusion_pytorch_model.safetensors"
    assert any(r[1].startswith("/cdn/") and r[1].endswith(unet) for r in hub.gets())
    assert sha(local.path / unet) == hub.repos[REPO].files[unet].etag


def quiet_sent(hub: FakeHub, name: str) -> int:
    """The bytes of ``name`` the hub has sent, once it has stopped sending them: a request
    released after its client went away still writes a chunk or two before the socket
    says so (counted after the count was read, the resumed download seemed to get 256 KiB
    more than it asked for)."""
    last = -1
    while True:
        with hub._lock:
            now = hub.sent.get(name, 0)
        if now == last:
            return now
        last = now
        time.sleep(0.3)


def wait_for_transfers_to_end() -> None:
    for thread in threading.enumerate():
        if thread.name.startswith("hub-download-"):
            thread.join(10)


def test_cancel_leaves_nothing_loaded_and_the_next_try_goes_on(
    hub: FakeHub, tmp_path: Path
) -> None:
    unet = "unet/diffusion_pytorch_model.safetensors"
    hub.hold_after = 1_500_000  # every big file stops there until released
    cancel = threading.Event()
    engine = engine_for(tmp_path)
    halfway = threading.Event()

    def progress(status: EngineStatus) -> None:
        d = status.download
        if d and any(p.digest == unet and p.completed >= 1_000_000 for p in d.active):
            halfway.set()

    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.load(on_progress=progress, cancel=cancel)
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    assert halfway.wait(60), "the download never got half-way"
    cancel.set()
    thread.join(30)
    assert not thread.is_alive(), "cancel did not stop a stalled download"
    assert len(outcome) == 1 and isinstance(outcome[0], LoadCancelled), outcome
    assert "next try goes on" in str(outcome[0])
    assert not engine.loaded and engine.status.state == "not loaded"

    hub.hold_after = None
    hub.release.set()
    wait_for_transfers_to_end()
    blobs = tmp_path / "cache" / "hub" / "models--tests--tiny-sd" / "blobs"
    part = blobs / (hub.repos[REPO].files[unet].etag + ".incomplete")
    kept = part.stat().st_size
    assert kept >= 1_000_000

    sent_before = quiet_sent(hub, unet)
    engine.load()
    assert engine.loaded
    assert hub.gets(unet)[-1][2] == f"bytes={kept}-"
    assert hub.sent[unet] - sent_before == len(hub.repos[REPO].files[unet].data) - kept
    assert not list(blobs.glob("*.incomplete"))


def test_a_cached_model_loads_with_no_network_at_all(hub: FakeHub, tmp_path: Path) -> None:
    engine_for(tmp_path).load()
    hub.stop()
    hub.requests.clear()
    engine = engine_for(tmp_path)
    engine.load()
    assert engine.loaded and hub.requests == []


def test_not_cached_and_offline_says_so_in_one_line(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    hub.stop()  # nothing listens there any more
    engine = engine_for(tmp_path)
    with pytest.raises(DiffusionError) as caught:
        engine.load()
    text = str(caught.value)
    assert "tests/tiny-sd is not in the cache and the hub cannot be reached" in text
    assert "llm-pessoal image-models pull tests/tiny-sd" in text and "\n" not in text
    assert engine.status.state == "failed"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DiffusionError, match="HF_HUB_OFFLINE is set"):
        engine_for(tmp_path).load()
    _out, err = capfd.readouterr()
    assert "huggingface_hub" not in err and "Traceback" not in err and "warn" not in err.lower()


def test_a_gated_repo_asks_for_a_token_then_downloads_with_it(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_repo_folder: Path
) -> None:
    hub.repos["tests/gated"] = HubRepo.from_folder(hub_repo_folder, gated=True, token="hf_ok")
    with pytest.raises(DiffusionError) as caught:
        engine_for(tmp_path, "tests/gated").load()
    text = str(caught.value)
    assert "tests/gated is gated" in text and "HF_TOKEN" in text and "hf auth login" in text
    monkeypatch.setenv("HF_TOKEN", "hf_ok")
    local = models(tmp_path).pull("tests/gated", fp16=False)
    assert (local.path / "unet" / "diffusion_pytorch_model.safetensors").is_file()


def test_a_missing_repo_says_the_id_is_wrong(hub: FakeHub, tmp_path: Path) -> None:
    with pytest.raises(DiffusionError) as caught:
        engine_for(tmp_path, "tests/no-such-model").load()
    assert str(caught.value).startswith("there is no model tests/no-such-model on the hub")
    assert not (tmp_path / "cache" / "hub" / "models--tests--no-such-model" / "snapshots").exists()


def test_too_little_free_space_is_refused_with_the_numbers_before_any_download(
    hub: FakeHub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("engines.hub.disk_free", lambda path: 1_000_000)
    hub_models = models(tmp_path)
    with pytest.raises(NotEnoughSpace) as caught:
        hub_models.pull(REPO, fp16=False)
    assert "needs 9.4 MB more" in str(caught.value) and "1.0 MB free" in str(caught.value)
    assert [r for r in hub.gets() if not r[1].endswith("model_index.json")] == []


def test_listing_and_deleting_frees_the_space(hub: FakeHub, tmp_path: Path) -> None:
    hub_models = models(tmp_path)
    hub_models.pull(REPO, fp16=False)
    local_root = tmp_path / "models"
    (local_root / "sd").mkdir(parents=True)
    (local_root / "sd" / "model_index.json").write_text("{}")
    (local_root / "one.safetensors").write_bytes(b"x" * 10)
    (local_root / "loras").mkdir()  # LoRAs and embeddings kept under models/ are not models
    (local_root / "loras" / "style.safetensors").write_bytes(b"y" * 10)
    listed = hub_models.models([local_root], default=REPO, skip=[local_root / "loras"])
    assert [(m.name, m.kind, m.default) for m in listed] == [
        (REPO, "hub", True),
        (str(local_root / "one.safetensors"), "file", False),
        (str(local_root / "sd"), "folder", False),
    ]
    assert listed[0].size == hub.repos[REPO].size(FP32) and listed[0].last_used
    freed = hub_models.remove(REPO)
    assert freed >= hub.repos[REPO].size(FP32)
    assert not (tmp_path / "cache" / "hub" / "models--tests--tiny-sd").exists()
    with pytest.raises(HubError, match="not inside a \\[paths\\] models folder"):
        hub_models.remove(str(tmp_path / "outputs"), [local_root])
    assert hub_models.remove(str(local_root / "one.safetensors"), [local_root]) == 10


def test_a_download_cancelled_from_its_progress_stops_at_once(hub: FakeHub, tmp_path: Path) -> None:
    cancel = threading.Event()
    reports: list[DownloadProgress] = []

    def progress(p: DownloadProgress) -> None:
        reports.append(p)
        if p.overall.overall_completed > 600:
            cancel.set()

    with pytest.raises(DownloadCancelled):
        models(tmp_path).pull(REPO, fp16=False, on_progress=progress, cancel=cancel)
    assert models(tmp_path).local(REPO, fp16=False) is None


def test_library_messages_go_to_the_log_not_the_terminal(
    hub: FakeHub,
    tmp_path: Path,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    hub.cut_after = 500_000
    with caplog.at_level(logging.WARNING):
        models(tmp_path).pull(REPO, fp16=False)
    assert "Trying to resume download" in caplog.text
    assert "Trying to resume" not in capfd.readouterr().err


def test_offline_errors_are_hub_offline(tmp_path: Path) -> None:
    hub_models = HubModels(tmp_path / "hub", endpoint="http://127.0.0.1:9")
    with pytest.raises(HubOffline, match="is not in the cache"):
        hub_models.plan(REPO, fp16=False)
