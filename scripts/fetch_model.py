"""Download the reference detection model and check it, so a fresh machine can run the detector.

    python -m scripts.fetch_model --dest models          # what the README says
    python -m scripts.fetch_model --dest /models         # what the Docker image runs
    python -m scripts.fetch_model --dest models --from-zip coco.zip   # an already downloaded zip

Fetches TensorFlow's coco_ssd_mobilenet_v1_1.0_quant_2018_06_29 zip, verifies the sha256 of its
detect.tflite and writes detect.tflite and labelmap.txt into --dest. Nothing is written unless the check
passes. Exit code 1 with one line on any failure.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import shutil
import sys
import tempfile
import urllib.request
import zipfile
from pathlib import Path

MODEL_URL = "https://storage.googleapis.com/download.tensorflow.org/models/tflite/coco_ssd_mobilenet_v1_1.0_quant_2018_06_29.zip"
MODEL_SHA256 = "e4b118e5e4531945de2e659742c7c590f7536f8d0ed26d135abcfe83b4779d13"
MODEL_MEMBER = "detect.tflite"
LABELS_MEMBER = "labelmap.txt"
DOWNLOAD_TIMEOUT_S = 60
MAX_ZIP_BYTES = 64 * 1024 * 1024


class FetchError(Exception):
    pass


def download(url: str) -> bytes:
    if not url.startswith(("https://", "http://", "file://")):
        raise FetchError(f"unsupported URL {url}")
    try:
        with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:  # noqa: S310 (scheme checked)
            data: bytes = response.read(MAX_ZIP_BYTES + 1)
    except OSError as error:
        raise FetchError(f"cannot download {url}: {error}") from error
    if len(data) > MAX_ZIP_BYTES:
        raise FetchError(f"{url} is larger than {MAX_ZIP_BYTES} bytes")
    return data


def extract(zip_bytes: bytes, expected_sha256: str = MODEL_SHA256) -> tuple[bytes, bytes]:
    """The model and label file from the zip (members found by base name), after the checksum."""
    try:
        archive = zipfile.ZipFile(io.BytesIO(zip_bytes))
    except zipfile.BadZipFile as error:
        raise FetchError(f"not a zip file: {error}") from error
    by_name = {Path(info.filename).name: info for info in archive.infolist() if not info.is_dir()}
    missing = [name for name in (MODEL_MEMBER, LABELS_MEMBER) if name not in by_name]
    if missing:
        raise FetchError(f"the zip has no {', '.join(missing)}")
    model = archive.read(by_name[MODEL_MEMBER])
    digest = hashlib.sha256(model).hexdigest()
    if digest != expected_sha256:
        raise FetchError(f"{MODEL_MEMBER} sha256 is {digest}, expected {expected_sha256}: refusing it")
    return model, archive.read(by_name[LABELS_MEMBER])


def install(model: bytes, labels: bytes, dest: Path) -> None:
    """Write both files atomically (temp file + rename), so a reader never sees half a model."""
    dest.mkdir(parents=True, exist_ok=True)
    for name, data in ((MODEL_MEMBER, model), (LABELS_MEMBER, labels)):
        with tempfile.NamedTemporaryFile(dir=dest, delete=False, prefix=f".{name}.") as handle:
            handle.write(data)
        shutil.move(handle.name, dest / name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dest", type=Path, default=Path("models"), help="directory for detect.tflite")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--url", default=MODEL_URL, help="where to download the zip from (also file://)")
    source.add_argument("--from-zip", type=Path, help="use this zip instead of downloading")
    args = parser.parse_args(argv)
    try:
        if args.from_zip is not None:
            try:
                zip_bytes = args.from_zip.read_bytes()
            except OSError as error:
                raise FetchError(f"cannot read {args.from_zip}: {error}") from error
        else:
            zip_bytes = download(args.url)
        model, labels = extract(zip_bytes)
        install(model, labels, args.dest)
    except FetchError as error:
        print(f"fetch_model: {error}", file=sys.stderr)
        return 1
    print(f"fetch_model: {args.dest / MODEL_MEMBER} (sha256 {MODEL_SHA256[:12]}...) and {LABELS_MEMBER}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
