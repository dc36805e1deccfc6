"""Uploaded documents: type from the content, limits, renditions without metadata, originals
kept byte for byte.

Every input is made here (Pillow, pillow-heif, hand-written PDF and PNG bytes). Pure tests: no
database; an app only where the test is about reading the app's settings.
"""
import hashlib
import io
import os
import resource
import struct
import threading
import zlib

import pytest
from PIL import ExifTags, Image, ImageCms
from werkzeug.datastructures import FileStorage

from app import create_app
from app.config import Config, TestConfig
from app.services import ServiceError
from app.services import uploads
from app.services.storage import LocalStorage
from app.services.uploads import UploadRejected, detect_mime, process_upload, store_upload

MB = 1024 * 1024
RED, GREEN, BLUE = (220, 20, 20), (20, 200, 20), (20, 20, 220)

NOT_SUPPORTED = ("O arquivo não é uma imagem ou PDF válido. Envie uma foto (JPEG, PNG ou HEIC) "
                 "ou um PDF.")
EMPTY = "O arquivo está vazio. Escolha o arquivo novamente."
CORRUPT_IMAGE = ("A imagem está corrompida ou incompleta. Tire a foto ou exporte o arquivo "
                 "novamente.")
BROKEN_PDF = "O PDF está corrompido ou incompleto. Gere o PDF novamente e envie outra vez."
ENCRYPTED_PDF = "O PDF está protegido por senha. Envie uma cópia sem senha."
TOO_LARGE_20MB = "O arquivo passa do limite de 20 MB por arquivo. Envie um arquivo menor."
TOO_MANY_PIXELS_50 = ("A resolução da imagem passa do limite de 50 megapixels. Envie uma foto "
                      "com resolução menor.")
LIMITS = {"max_bytes": 20 * MB, "max_pixels": 50_000_000, "max_pdf_pages": 20}

XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-'
       b'rdf-syntax-ns#"><rdf:Description xmlns:exif="http://ns.adobe.com/exif/1.0/" '
       b'exif:GPSLatitude="23,33.1S"/></rdf:RDF></x:xmpmeta>')


def rejection(source, **limits) -> str:
    with pytest.raises(UploadRejected) as exc:
        process_upload(source, **{**LIMITS, **limits})
    assert isinstance(exc.value, ServiceError)
    return str(exc.value.message)


# --- inputs ---------------------------------------------------------------------------------

def sensor_picture(width: int, height: int) -> Image.Image:
    """What a sensor records: red left half, blue right half, a green band along the top."""
    im = Image.new("RGB", (width, height), RED)
    im.paste(BLUE, (width // 2, 0, width, height))
    im.paste(GREEN, (0, 0, width, height // 4))
    return im


def phone_exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "Testphone"
    exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "S"
    gps[ExifTags.GPS.GPSLatitude] = (23.0, 33.0, 7.0)
    gps[ExifTags.GPS.GPSLongitudeRef] = "W"
    gps[ExifTags.GPS.GPSLongitude] = (46.0, 38.0, 2.0)
    return exif


def swapped_primaries_profile() -> bytes:
    """An RGB ICC profile that is not sRGB: Pillow's sRGB profile with the red and blue
    primaries swapped (and renamed), so a "red" pixel under it is really blue."""
    data = bytearray(ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    entries = {}
    for i in range(struct.unpack(">I", data[128:132])[0]):
        start = 132 + 12 * i
        entries[bytes(data[start:start + 4])] = start
    red, blue = entries[b"rXYZ"], entries[b"bXYZ"]
    red_entry, blue_entry = bytes(data[red + 4:red + 12]), bytes(data[blue + 4:blue + 12])
    data[red + 4:red + 12], data[blue + 4:blue + 12] = blue_entry, red_entry
    name = data.index("sRGB".encode("utf-16-be"))
    data[name:name + 8] = "Test".encode("utf-16-be")
    return bytes(data)


@pytest.fixture(scope="module")
def phone_jpeg() -> bytes:
    """A 12-megapixel phone photo taken in portrait: orientation 6, GPS, XMP, an ICC profile."""
    out = io.BytesIO()
    sensor_picture(4032, 3024).save(
        out, "JPEG", quality=90, exif=phone_exif(6), xmp=XMP,
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes())
    return out.getvalue()


@pytest.fixture(scope="module")
def phone_heic() -> bytes:
    out = io.BytesIO()
    sensor_picture(640, 480).save(out, "HEIF", quality=90, exif=phone_exif(6).tobytes())
    return out.getvalue()


def png_bytes(im: Image.Image) -> bytes:
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares width x height (a decompression bomb)."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header)
            + png_chunk(b"IDAT", zlib.compress(b"\0" * (width + 1) * 4, 9))
            + png_chunk(b"IEND", b""))


def pdf_bytes(colors) -> bytes:
    pages = [Image.new("RGB", (595, 842), color) for color in colors]  # A4 at 72 dpi
    out = io.BytesIO()
    pages[0].save(out, "PDF", save_all=True, append_images=pages[1:], resolution=72)
    return out.getvalue()


def encrypted_pdf() -> bytes:
    """A one-page PDF under the standard security handler with a user password."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <" + b"11" * 32 + b"> /U <" + b"22" * 32
        + b"> /P -4 >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += (b"trailer\n<< /Size %d /Root 1 0 R /Encrypt 4 0 R /ID [<%s> <%s>] >>\n"
            b"startxref\n%d\n%%%%EOF\n" % (len(objects) + 1, b"ab" * 16, b"ab" * 16, xref))
    return bytes(out)


def assert_no_metadata(rendition: uploads.Rendition):
    data = rendition.data
    with Image.open(io.BytesIO(data)) as im:
        assert im.format == "JPEG" and (im.width, im.height) == (rendition.width,
                                                                 rendition.height)
        assert not {"exif", "icc_profile", "xmp", "comment", "photoshop"} & set(im.info)
        assert len(im.getexif()) == 0
        assert im.getexif().get_ifd(ExifTags.IFD.GPSInfo) == {}
    for marker in (b"Exif\0", b"ICC_PROFILE", b"http://ns.adobe.com/xap", b"Testphone",
                   b"GPSLatitude", b"xmpmeta"):
        assert marker not in data
    # Only SOI, the JFIF header, tables, frame and scan: no APP1..APP15 or COM segment.
    assert b"\xff\xe1" not in data[:200] and b"\xff\xfe" not in data[:200]


def color_at(rendition: uploads.Rendition, x: float, y: float):
    with Image.open(io.BytesIO(rendition.data)) as im:
        return im.convert("RGB").getpixel((int(x * (im.width - 1)), int(y * (im.height - 1))))


def close_to(actual, expected, tolerance=24):
    return all(abs(a - e) <= tolerance for a, e in zip(actual, expected))


# --- type from the content ------------------------------------------------------------------

@pytest.mark.parametrize("head, mime", [
    (b"\xff\xd8\xff\xe0\0\x10JFIF", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", "image/png"),
    (b"\0\0\0\x18ftypheic\0\0\0\0mif1heic", "image/heic"),
    (b"\0\0\0\x1cftypmif1\0\0\0\0mif1heicmiaf", "image/heic"),
    (b"\0\0\0\x18ftypmif1\0\0\0\0mif1miaf", "image/heif"),
    (b"\0\0\0\x1cftypavif\0\0\0\0avifmif1miaf", None),
    (b"\0\0\0\x1cftypmif1\0\0\0\0mif1avifmiaf", None),
    (b"\0\0\0\x18ftypisom\0\0\0\0isommp41", None),  # an MP4 video
    (b"%PDF-1.7\n", "application/pdf"),
    (b"\xef\xbb\xbf\n%PDF-1.4\n", "application/pdf"),
    (b"<!DOCTYPE html><html>", None),
    (b"MZ\x90\0\3\0\0\0", None),
    (b"GIF89a", None),
    (b"", None),
])
def test_detect_mime_reads_the_first_bytes(head, mime):
    assert detect_mime(head) == mime


# --- images -----------------------------------------------------------------------------------

def test_a_12_megapixel_phone_jpeg_is_turned_upright_and_stripped(phone_jpeg):
    upload = process_upload(phone_jpeg, **LIMITS)
    assert (upload.kind, upload.mime, upload.pages) == ("image", "image/jpeg", 1)
    assert upload.sha256 == hashlib.sha256(phone_jpeg).hexdigest()
    assert upload.size == len(phone_jpeg)
    # Orientation 6: the 4032x3024 sensor picture is a 3024x4032 portrait photo.
    assert (upload.width, upload.height) == (3024, 4032)
    assert (upload.web.width, upload.web.height) == (1200, 1600)
    assert (upload.thumbnail.width, upload.thumbnail.height) == (240, 320)
    for rendition in (upload.web, upload.thumbnail):
        # Turned 90° clockwise: the sensor's top (green) is on the right, its left half (red)
        # on top, its right half (blue) at the bottom.
        assert close_to(color_at(rendition, 0.95, 0.5), GREEN)
        assert close_to(color_at(rendition, 0.2, 0.1), RED)
        assert close_to(color_at(rendition, 0.2, 0.9), BLUE)
        assert_no_metadata(rendition)
    assert len(upload.web.data) < len(phone_jpeg)


@pytest.mark.parametrize("orientation, size, top_left, bottom_right", [
    (1, (400, 300), GREEN, BLUE),
    (3, (400, 300), BLUE, GREEN),
    (6, (300, 400), RED, GREEN),
    (8, (300, 400), GREEN, RED),
    (2, (400, 300), GREEN, RED),
])
def test_every_exif_orientation_is_applied_once(orientation, size, top_left, bottom_right):
    out = io.BytesIO()
    sensor_picture(400, 300).save(out, "JPEG", quality=95, exif=phone_exif(orientation))
    upload = process_upload(out.getvalue(), **LIMITS)
    assert (upload.width, upload.height) == size == (upload.web.width, upload.web.height)
    assert close_to(color_at(upload.web, 0.02, 0.02), top_left)
    assert close_to(color_at(upload.web, 0.98, 0.98), bottom_right)


def test_an_iphone_heic_is_accepted_and_turned_upright_once(phone_heic):
    upload = process_upload(phone_heic, **LIMITS)
    assert (upload.kind, upload.mime) == ("image", "image/heic")
    assert (upload.width, upload.height) == (480, 640)
    assert (upload.web.width, upload.web.height) == (480, 640)  # never enlarged
    assert (upload.thumbnail.width, upload.thumbnail.height) == (240, 320)
    assert close_to(color_at(upload.web, 0.95, 0.5), GREEN, 40)
    assert close_to(color_at(upload.web, 0.2, 0.1), RED, 40)
    assert close_to(color_at(upload.web, 0.2, 0.9), BLUE, 40)
    assert_no_metadata(upload.web)
    assert_no_metadata(upload.thumbnail)


def test_a_png_with_transparency_gets_a_white_background():
    im = Image.new("RGBA", (800, 600), (0, 0, 0, 0))
    im.paste((20, 20, 220, 255), (0, 0, 400, 600))
    upload = process_upload(png_bytes(im), **LIMITS)
    assert (upload.kind, upload.mime) == ("image", "image/png")
    assert (upload.width, upload.height) == (800, 600)
    assert (upload.web.width, upload.web.height) == (800, 600)
    assert close_to(color_at(upload.web, 0.1, 0.5), BLUE)
    assert close_to(color_at(upload.web, 0.9, 0.5), (255, 255, 255), 8)
    assert_no_metadata(upload.web)


@pytest.mark.parametrize("mode, value, expected_gray", [
    ("L", 128, 128), ("I;16", 32768, 128), ("1", 1, 255), ("LA", (100, 255), 100),
])
def test_png_modes_become_rgb(mode, value, expected_gray):
    upload = process_upload(png_bytes(Image.new(mode, (64, 48), value)), **LIMITS)
    assert close_to(color_at(upload.web, 0.5, 0.5), (expected_gray,) * 3, 3)


def test_a_palette_png_and_a_cmyk_jpeg_are_converted():
    palette = Image.new("RGB", (100, 100), BLUE).convert("P")
    assert close_to(color_at(process_upload(png_bytes(palette), **LIMITS).web, 0.5, 0.5), BLUE)
    out = io.BytesIO()
    Image.new("CMYK", (100, 100), (0, 255, 255, 0)).save(out, "JPEG")  # red
    upload = process_upload(out.getvalue(), **LIMITS)
    assert close_to(color_at(upload.web, 0.5, 0.5), (255, 0, 0), 30)


def test_a_phone_mpo_jpeg_is_a_jpeg():
    out = io.BytesIO()
    sensor_picture(400, 300).save(out, "MPO", save_all=True,
                                  append_images=[sensor_picture(200, 150)])
    upload = process_upload(out.getvalue(), **LIMITS)
    assert (upload.mime, upload.width, upload.height) == ("image/jpeg", 400, 300)


def test_a_non_srgb_profile_is_converted_then_dropped():
    profile = swapped_primaries_profile()
    assert "Test" in ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(profile)))
    out = io.BytesIO()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(out, "JPEG", quality=95, icc_profile=profile)
    upload = process_upload(out.getvalue(), **LIMITS)
    assert_no_metadata(upload.web)
    red, green, blue = color_at(upload.web, 0.5, 0.5)
    assert blue > 150 and red < 80  # the profile's "red" shown as the blue it means


def test_an_srgb_profile_keeps_the_pixels():
    out = io.BytesIO()
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    Image.new("RGB", (64, 64), (255, 0, 0)).save(out, "JPEG", quality=95, icc_profile=srgb)
    upload = process_upload(out.getvalue(), **LIMITS)
    assert close_to(color_at(upload.web, 0.5, 0.5), (255, 0, 0), 8)


# --- PDFs -----------------------------------------------------------------------------------

def test_a_pdf_gets_a_rendition_and_thumbnail_per_page():
    data = pdf_bytes([(255, 255, 255), RED, BLUE])
    upload = process_upload(data, **LIMITS)
    assert (upload.kind, upload.mime, upload.pages) == ("pdf", "application/pdf", 3)
    assert (upload.width, upload.height) == (None, None)
    assert upload.sha256 == hashlib.sha256(data).hexdigest()
    assert len(upload.renditions) == 3
    for page, color in zip(upload.renditions, [(255, 255, 255), RED, BLUE]):
        assert (page.web.width, page.web.height) == (1131, 1600)  # A4, longest side 1600
        assert (page.thumbnail.width, page.thumbnail.height) == (226, 320)
        assert close_to(color_at(page.web, 0.5, 0.5), color, 8)
        assert close_to(color_at(page.thumbnail, 0.5, 0.5), color, 8)
        assert_no_metadata(page.web)


def test_a_pdf_over_the_page_limit_is_refused():
    assert rejection(pdf_bytes([RED] * 4), max_pdf_pages=3) == (
        "O PDF tem 4 páginas; o limite é 3 páginas por arquivo. Divida o documento em "
        "arquivos menores.")
    assert process_upload(pdf_bytes([RED] * 3), **{**LIMITS, "max_pdf_pages": 3}).pages == 3


def test_an_encrypted_pdf_is_refused():
    assert rejection(encrypted_pdf()) == ENCRYPTED_PDF


def test_broken_pdfs_are_refused():
    data = pdf_bytes([RED, BLUE])
    assert rejection(data[: len(data) // 2]) == BROKEN_PDF
    assert rejection(b"%PDF-1.4\n" + os.urandom(2000)) == BROKEN_PDF


def test_pdfs_from_many_threads_at_once():
    data = [pdf_bytes([color] * 2) for color in (RED, GREEN, BLUE, (255, 255, 255))]
    results = {}

    def work(i):
        results[i] = process_upload(data[i], **LIMITS)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [0, 1, 2, 3]
    for i, color in enumerate((RED, GREEN, BLUE, (255, 255, 255))):
        assert close_to(color_at(results[i].renditions[1].web, 0.5, 0.5), color, 8)


# --- refusals -------------------------------------------------------------------------------

def test_an_exe_named_jpg_is_refused():
    exe = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff" + os.urandom(4000)
    upload = FileStorage(io.BytesIO(exe), filename="RG-frente.jpg", content_type="image/jpeg")
    assert rejection(upload.stream) == NOT_SUPPORTED


def test_an_exe_behind_a_jpeg_signature_is_refused():
    assert rejection(b"\xff\xd8\xff\xe0" + os.urandom(4000)) == CORRUPT_IMAGE


def test_an_html_file_named_pdf_is_refused():
    html = b"<!DOCTYPE html><html><head><title>RG.pdf</title></head><body>PDF</body></html>"
    upload = FileStorage(io.BytesIO(html), filename="RG.pdf", content_type="application/pdf")
    assert rejection(upload.stream) == NOT_SUPPORTED


def test_an_empty_file_is_refused():
    assert rejection(b"") == EMPTY


def test_a_truncated_jpeg_is_refused(phone_jpeg):
    assert rejection(phone_jpeg[: int(len(phone_jpeg) * 0.6)]) == CORRUPT_IMAGE


def test_a_truncated_jpeg_is_refused_after_weasyprint_was_loaded(phone_jpeg):
    """Importing WeasyPrint (the termo) turns Pillow's LOAD_TRUNCATED_IMAGES on for the whole
    process; uploads decoded afterwards must still refuse a truncated photo."""
    from PIL import ImageFile

    import weasyprint  # noqa: F401

    ImageFile.LOAD_TRUNCATED_IMAGES = True  # as weasyprint's import leaves it
    assert rejection(phone_jpeg[: int(len(phone_jpeg) * 0.6)]) == CORRUPT_IMAGE
    small = io.BytesIO()
    Image.effect_noise((600, 400), 60).convert("RGB").save(small, "JPEG", quality=90)
    assert rejection(small.getvalue()[:-4000]) == CORRUPT_IMAGE


def test_a_corrupt_png_is_refused():
    data = bytearray(png_bytes(Image.effect_noise((300, 200), 50).convert("RGB")))
    idat = data.index(b"IDAT")
    data[idat + 200] ^= 0xFF  # a flipped byte in the compressed pixels
    assert rejection(bytes(data)) == CORRUPT_IMAGE
    truncated = png_bytes(Image.effect_noise((300, 200), 50).convert("RGB"))[:-5000]
    assert rejection(truncated) == CORRUPT_IMAGE


def test_a_decompression_bomb_is_refused_before_decoding():
    bomb = png_declaring(30000, 30000)  # 900 megapixels in a few kB
    assert len(bomb) < 10_000
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert rejection(bomb) == TOO_MANY_PIXELS_50
    # Decoding would have needed 900 MB for the pixels alone.
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - peak_before < 200 * 1024


def test_our_pixel_limit_applies_below_pillows():
    # 60 megapixels: under Pillow's own threshold, over UPLOAD_MAX_PIXELS.
    assert rejection(png_declaring(10000, 6000)) == TOO_MANY_PIXELS_50
    assert rejection(png_declaring(1000, 1000), max_pixels=999_999) == (
        "A resolução da imagem passa do limite de 1 megapixels. Envie uma foto com "
        "resolução menor.")


def test_pillows_bomb_warning_is_a_refusal_too():
    # 100 megapixels with a limit of 200: Pillow only warns (past 89.5 MP); that refuses.
    message = rejection(png_declaring(10000, 10000), max_pixels=200_000_000)
    assert message.startswith("A resolução da imagem passa do limite de 89,5 megapixels.")


def test_a_file_over_the_size_limit_is_refused():
    assert rejection(b"\xff\xd8\xff" + b"\0" * (2 * MB), max_bytes=2 * MB) == (
        "O arquivo passa do limite de 2 MB por arquivo. Envie um arquivo menor.")


def test_a_stream_that_cannot_seek_is_read_once_and_only_up_to_the_limit(phone_heic):
    class RequestBody:
        def __init__(self, data, total=None):
            self.data, self.total, self.sent = data, total or len(data), 0

        def read(self, size=-1):
            size = self.total - self.sent if size < 0 else min(size, self.total - self.sent)
            chunk = self.data[self.sent:self.sent + size].ljust(size, b"\0")
            self.sent += size
            return chunk

    assert process_upload(RequestBody(phone_heic), **LIMITS).mime == "image/heic"
    body = RequestBody(b"%PDF-1.4\n", total=50 * MB)
    assert rejection(body) == TOO_LARGE_20MB
    assert body.sent <= 20 * MB + 1


# --- storing --------------------------------------------------------------------------------

@pytest.fixture
def storage(tmp_path):
    return LocalStorage(tmp_path / "storage")


def stored_files(storage):
    return sorted(storage.iter_sha256())


def test_store_upload_keeps_the_original_byte_for_byte(storage, phone_jpeg):
    upload = store_upload(io.BytesIO(phone_jpeg), storage, **LIMITS)
    assert upload.original.sha256 == hashlib.sha256(phone_jpeg).hexdigest()
    assert upload.original.size == len(phone_jpeg) and upload.original.created
    with storage.open(upload.original.sha256) as f:
        assert f.read() == phone_jpeg  # GPS and all: the evidence is untouched
    page = upload.renditions[0]
    with storage.open(page.web.sha256) as f:
        assert f.read() == upload.processed.web.data
    with storage.open(page.thumbnail.sha256) as f:
        assert f.read() == upload.processed.thumbnail.data
    assert stored_files(storage) == sorted(
        [upload.original.sha256, page.web.sha256, page.thumbnail.sha256])
    # The same photo again: nothing new stored.
    again = store_upload(io.BytesIO(phone_jpeg), storage, **LIMITS)
    assert again.original.sha256 == upload.original.sha256 and not again.original.created
    assert len(stored_files(storage)) == 3 and storage.temp_files() == []


def test_store_upload_of_a_pdf_stores_every_page(storage):
    upload = store_upload(io.BytesIO(pdf_bytes([RED, BLUE])), storage, **LIMITS)
    assert upload.processed.pages == 2 and len(upload.renditions) == 2
    assert len(stored_files(storage)) == 1 + 2 * 2


@pytest.mark.parametrize("data, message", [
    (b"", EMPTY),
    (b"<html><body>not a PDF</body></html>", NOT_SUPPORTED),
    (b"MZ\x90\x00" + b"\0" * 5000, NOT_SUPPORTED),
    (png_declaring(30000, 30000), TOO_MANY_PIXELS_50),
    (b"%PDF-1.4\n" + b"garbage" * 300, BROKEN_PDF),
])
def test_a_refused_upload_leaves_nothing_stored(storage, data, message):
    with pytest.raises(UploadRejected) as exc:
        store_upload(io.BytesIO(data), storage, **LIMITS)
    assert str(exc.value.message) == message
    assert stored_files(storage) == [] and storage.temp_files() == []


def test_a_50_mb_upload_is_cut_off_at_the_limit(storage):
    class ClientUpload:
        sent = 0

        def read(self, size=-1):
            n = min(size, 50 * MB - self.sent)
            self.sent += n
            return b"\xff\xd8\xff" + b"\0" * (n - 3) if self.sent == n else b"\0" * n

    stream = ClientUpload()
    with pytest.raises(UploadRejected) as exc:
        store_upload(stream, storage, **LIMITS)
    assert str(exc.value.message) == TOO_LARGE_20MB
    assert stream.sent <= 21 * MB
    assert stored_files(storage) == [] and storage.temp_files() == []


def test_a_refusal_never_deletes_content_stored_for_someone_else(storage):
    # Identical bytes already stored (say, by a request under other limits): a refused upload
    # of the same content must leave them.
    bomb = png_declaring(10000, 6000)
    kept = storage.put(bomb)
    with pytest.raises(UploadRejected):
        store_upload(io.BytesIO(bomb), storage, **LIMITS)
    assert storage.exists(kept.sha256)


# --- settings -------------------------------------------------------------------------------

def test_limits_come_from_the_app_config(tmp_path):
    class Settings(TestConfig):
        INSTANCE_DIR = tmp_path / "instance"
        UPLOAD_MAX_PDF_PAGES = 2
        UPLOAD_MAX_BYTES = 3 * MB
        UPLOAD_MAX_PIXELS = 1_000_000
        SQLALCHEMY_DATABASE_URI = f"sqlite:///{tmp_path / 'unused.db'}"  # never connected to

    app = create_app(Settings)
    with app.app_context():
        assert uploads.Limits.resolve() == uploads.Limits(3 * MB, 1_000_000, 2)
        with pytest.raises(UploadRejected) as exc:
            process_upload(pdf_bytes([RED] * 3))
        assert str(exc.value.message) == ("O PDF tem 3 páginas; o limite é 2 páginas por "
                                          "arquivo. Divida o documento em arquivos menores.")
        upload = store_upload(io.BytesIO(pdf_bytes([RED, BLUE])))
    assert (tmp_path / "instance" / "storage").is_dir()
    assert LocalStorage(tmp_path / "instance" / "storage").exists(upload.original.sha256)
    # Without an app, the defaults of Config.
    assert uploads.Limits.resolve() == uploads.Limits(
        Config.UPLOAD_MAX_BYTES, Config.UPLOAD_MAX_PIXELS, Config.UPLOAD_MAX_PDF_PAGES)
    assert (Config.UPLOAD_MAX_BYTES, Config.UPLOAD_MAX_PIXELS, Config.UPLOAD_MAX_PDF_PAGES) == (
        20 * MB, 50_000_000, 20)
