"""Test corpus generated at run time: no binary blobs committed.

``non_chest_images()`` yields (name, bytes) of images that are not usable chest films: photos and other
images shipped inside installed packages (scikit-learn, matplotlib, pydicom test files), other
modalities (MR, CT, ultrasound test DICOMs), maps, and synthetic patterns. ``broken_files()`` yields
(name, bytes) that are not decodable images at all. ``awkward_encodings(film_path)`` re-encodes one real
film in the encodings real uploads arrive in. The DICOM writers (``film_as_dicom``, ``dicom_without_pixels``,
``dicom_claiming_size``, ``dicom_with_unknown_syntax``, ``multiframe_dicom_bomb``, ``with_identity``) build the
DICOM cases from real films; ``Upload`` and ``copy_registry`` help drive the app's upload path.
"""
from __future__ import annotations

import gzip
import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

SEED = 1234


def _png(array_or_image, mode: str | None = None) -> bytes:
    image = array_or_image if isinstance(array_or_image, Image.Image) else Image.fromarray(array_or_image, mode)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _jpeg(image: Image.Image, **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=92, **kwargs)
    return buffer.getvalue()


def _to_uint8(values: np.ndarray) -> np.ndarray:
    values = values.astype(np.float64)
    lo, hi = np.percentile(values, 1), np.percentile(values, 99)
    return (np.clip((values - lo) / max(hi - lo, 1e-9), 0, 1) * 255).astype(np.uint8)


def package_photos() -> list[tuple[str, Image.Image]]:
    import matplotlib
    import sklearn.datasets

    photos = []
    for path in sorted((Path(sklearn.datasets.__file__).parent / "images").glob("*.jpg")):
        photos.append((path.stem, Image.open(path).convert("RGB")))
    sample = Path(matplotlib.__file__).parent / "mpl-data" / "sample_data"
    for name in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png"):
        if (sample / name).exists():
            photos.append((Path(name).stem, Image.open(sample / name).convert("RGB")))
    for name in ("topobathy.npz", "jacksboro_fault_dem.npz"):
        if (sample / name).exists():
            with np.load(sample / name) as data:
                photos.append((Path(name).stem, Image.fromarray(_to_uint8(data[data.files[0]]))))
    if (sample / "s1045.ima.gz").exists():  # an MR head slice, 256 x 256 16-bit
        raw = np.frombuffer(gzip.decompress((sample / "s1045.ima.gz").read_bytes()), np.uint16)
        photos.append(("mr_head", Image.fromarray(_to_uint8(raw.reshape(256, 256)))))
    return photos


def pydicom_test_images() -> list[tuple[str, bytes]]:
    import pydicom

    folder = Path(pydicom.__file__).parent / "data" / "test_files"
    return [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.dcm"))]


def synthetic_images(size: int = 512) -> list[tuple[str, bytes]]:
    rng = np.random.default_rng(SEED)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = [
        ("uniform_noise", _png((rng.random((size, size)) * 255).astype(np.uint8))),
        ("gaussian_noise", _png(np.clip(rng.normal(128, 40, (size, size)), 0, 255).astype(np.uint8))),
        ("gradient", _png((xx * 255).astype(np.uint8))),
        ("radial", _png((np.hypot(xx - 0.5, yy - 0.5) * 360).clip(0, 255).astype(np.uint8))),
        ("checkerboard", _png((((xx * 8).astype(int) + (yy * 8).astype(int)) % 2 * 255).astype(np.uint8))),
        ("stripes", _png(((np.sin(xx * 60) > 0) * 255).astype(np.uint8))),
        ("blank_grey", _png(np.full((size, size), 128, np.uint8))),
        ("blank_black", _png(np.zeros((size, size), np.uint8))),
        ("saturated", _png(((rng.random((size, size)) > 0.5) * 255).astype(np.uint8))),
        ("clouds", _png(_to_uint8(np.asarray(Image.fromarray((rng.random((size, size)) * 255).astype(np.uint8))
                                               .filter(ImageFilter.GaussianBlur(12)), dtype=np.float64)))),
    ]
    page = Image.new("L", (size, size), 255)
    draw = ImageDraw.Draw(page)
    for row in range(0, size, 18):
        draw.text((10, row), "Patient report page: findings, impression, recommendations " * 2, fill=0)
    out.append(("text_page", _png(page)))
    shapes = Image.new("RGB", (size, size), (20, 20, 20))
    draw = ImageDraw.Draw(shapes)
    for _ in range(25):
        x, y, r = rng.integers(0, size, 2).tolist() + [int(rng.integers(10, 80))]
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.integers(0, 255, 3).tolist()))
    out.append(("shapes", _png(shapes)))
    return out


def non_chest_images() -> list[tuple[str, bytes]]:
    """Every image here must be flagged (warning, no priority) or refused."""
    items = synthetic_images()
    for name, photo in package_photos():
        items.append((f"{name}.jpg", _jpeg(photo)))
        items.append((f"{name}_grey.png", _png(photo.convert("L"))))
        w, h = photo.size
        items.append((f"{name}_crop.png", _png(photo.crop((w // 4, h // 4, 3 * w // 4, 3 * h // 4)).convert("L"))))
    items += pydicom_test_images()
    return items


def broken_files(film_path: Path) -> list[tuple[str, bytes]]:
    """Files that are not decodable images; each must give a clear error."""
    film = film_path.read_bytes()
    bomb = io.BytesIO()
    Image.new("1", (12000, 12000)).save(bomb, format="PNG")  # 144 megapixels in ~20 kB
    return [
        ("empty.png", b""),
        ("notes.txt", b"Chest film to follow.\n" * 20),
        ("report.pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"),
        ("truncated.jpeg", film[: len(film) // 3]),
        ("random.bin", np.random.default_rng(SEED).bytes(4096)),
        ("bomb.png", bomb.getvalue()),
    ]


def awkward_encodings(film_path: Path) -> list[tuple[str, bytes]]:
    """One real film in awkward encodings; each must give nearly the plain film's answer."""
    grey = Image.open(film_path).convert("L")
    arr = np.asarray(grey)
    rgba = grey.convert("RGBA")
    rotated = grey.rotate(90, expand=True)  # stored sideways; EXIF orientation 6 turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    w, h = grey.size
    return [
        ("plain.png", _png(grey)),
        ("grey16.png", _png(Image.fromarray(arr.astype(np.uint16) * 257))),
        ("rgba.png", _png(rgba)),
        ("cmyk.jpg", _jpeg(grey.convert("CMYK"))),
        ("palette.png", _png(grey.convert("P"))),
        ("exif_rotated.jpg", _jpeg(rotated, exif=exif.tobytes())),
        ("large.png", _png(grey.resize((w * 3, h * 3), Image.Resampling.BICUBIC))),
    ]


def env_flag(name: str) -> bool:
    return os.environ.get(name, "").lower() in {"1", "true", "yes"}


# --- DICOM files written at test time ------------------------------------------------------------------


def _dicom_dataset(rows: int, columns: int, bits: int = 16, photometric: str = "MONOCHROME2"):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"  # Computed Radiography Image Storage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "CR", "CHEST", "PA"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    return ds


DICOM_LAYOUTS = ("file", "no-preamble", "bare")


def _write_dicom(ds, layout: str = "file") -> bytes:
    """``file``: a DICOM Part 10 file. ``no-preamble``: the file meta group without the 128-byte preamble and
    "DICM". ``bare``: the data set alone (implicit VR little endian, no file meta), as old exports write it."""
    import pydicom

    buffer = io.BytesIO()
    if layout == "file":
        pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    elif layout == "no-preamble":
        pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    elif layout == "bare":
        del ds.file_meta
        pydicom.dcmwrite(buffer, ds, implicit_vr=True, little_endian=True, enforce_file_format=False)
    else:
        raise ValueError(f"unknown DICOM layout {layout!r}; one of {DICOM_LAYOUTS}")
    return buffer.getvalue()


def film_as_dicom(grey: Image.Image, monochrome1: bool = False, layout: str = "file") -> bytes:
    """A real 8-bit film written as a 16-bit CR DICOM, as a PACS exports it.

    MONOCHROME1 stores inverted values (low = white), as many CR/DR systems do. The window maps the stored
    range linearly onto the display range, so a correct reader gets back exactly the 8-bit film / 255.
    """
    stored = np.asarray(grey.convert("L"), dtype=np.uint16) * 257
    if monochrome1:
        stored = 65535 - stored
    ds = _dicom_dataset(*stored.shape, photometric="MONOCHROME1" if monochrome1 else "MONOCHROME2")
    ds.WindowCenter, ds.WindowWidth = 32768, 65536  # PS3.3 C.11.2.1.2: y = x / 65535
    ds.PixelData = stored.tobytes()
    return _write_dicom(ds, layout)


def dicom_without_pixels() -> bytes:
    """A DICOM header with image attributes but no Pixel Data element (a report or a failed export)."""
    return _write_dicom(_dicom_dataset(512, 512))


def dicom_claiming_size(side: int = 10_000) -> bytes:
    """A header that claims side x side pixels over 8 bytes of pixel data: must be refused on the header alone."""
    ds = _dicom_dataset(side, side)
    ds.PixelData = bytes(8)
    return _write_dicom(ds)


def dicom_with_unknown_syntax(grey: Image.Image) -> bytes:
    """Pixel data under a made-up (private) Transfer Syntax UID that no decoder knows."""
    import pydicom

    stored = np.asarray(grey.convert("L"), dtype=np.uint16) * 257
    ds = _dicom_dataset(*stored.shape)
    ds.file_meta.TransferSyntaxUID = "1.2.826.0.1.3680043.9.9999.1.2.3"
    ds.PixelData = stored.tobytes()
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, implicit_vr=False, little_endian=True, enforce_file_format=True)
    return buffer.getvalue()


def multiframe_dicom_bomb(frames: int = 48, side: int = 2048) -> bytes:
    """Many JPEG-compressed blank frames: a few hundred kB on disk, frames x side^2 pixels decoded."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGBaseline8Bit

    frame = io.BytesIO()
    Image.new("L", (side, side), 0).save(frame, format="JPEG", quality=50)
    ds = _dicom_dataset(side, side, bits=8)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds.NumberOfFrames = frames
    ds.PixelData = encapsulate([frame.getvalue()] * frames)
    ds["PixelData"].VR = "OB"
    return _write_dicom(ds)


def with_identity(dicom: bytes, **tags: str) -> bytes:
    """The same DICOM with identifying attributes (PatientName=..., PatientID=...) set to the given values."""
    import pydicom

    ds = pydicom.dcmread(io.BytesIO(dicom))
    for keyword, value in tags.items():
        setattr(ds, keyword, value)
    buffer = io.BytesIO()
    ds.save_as(buffer)
    return buffer.getvalue()


class Upload:
    """What ``st.file_uploader`` hands the triage page: a name and the bytes, held in memory.

    ``dashboard.state.triage_uploads`` takes ``dashboard.state.Upload.of(this)``, as the page does.
    """

    def __init__(self, name: str, data: bytes):
        self.name, self._data = name, data

    def getvalue(self) -> bytes:
        return self._data


def copy_registry(source: Path, destination: Path) -> Path:
    """A private copy of a checkpoints folder (models and registry.json; lock files left behind)."""
    destination.mkdir(parents=True)
    for path in source.iterdir():
        if path.is_file() and not path.name.startswith("."):
            (destination / path.name).write_bytes(path.read_bytes())
    return destination
