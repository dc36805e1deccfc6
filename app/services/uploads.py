"""Uploaded documents: decide what a file is from its content, check it, and make its
renditions.

Accepted: JPEG, PNG, HEIC/HEIF (Pillow + pillow-heif) and PDF (pypdfium2). The file name and the
browser's Content-Type are never looked at: the first bytes decide the type, and only that
type's decoder may open the file. Everything refused raises `UploadRejected` with a pt-BR
message the client can act on.

    upload = store_upload(file.stream)       # original + renditions into the app's storage
    upload.original.sha256                   # the evidence, byte for byte
    upload.renditions[0].web.sha256          # JPEG, longest side 1600 px, no metadata
    upload.processed.kind, .mime, .pages ...

`process_upload` does the same without storing (bytes or a binary file in, a
`ProcessedUpload` with the renditions as bytes out). Neither needs an app context when every
limit is passed in; a missing limit is read from the app's config (or `Config` outside an app).

Images: the EXIF orientation is applied, and the renditions carry no metadata at all (no EXIF,
GPS, XMP, comments or ICC profile; colours are converted to sRGB first). JPEGs are decoded at
reduced size (libjpeg's DCT scaling, `draft`) when only a rendition is needed, so a 12-megapixel
photo is never fully decoded. Decompression bombs are refused from the header, before any pixel
is decoded. PDFs: the page count, and a rendition and thumbnail per page. PDFium is not
thread-safe, so every call into it holds one process-wide lock.
"""
import hashlib
import io
import tempfile
import threading
import warnings
from dataclasses import dataclass
from typing import BinaryIO

import pillow_heif
import pypdfium2
import pypdfium2.raw as pdfium_c
from flask import current_app, has_app_context
from flask_babel import lazy_gettext as _l
from PIL import Image, ImageCms, ImageFile, UnidentifiedImageError

from ..config import Config
from . import ServiceError
from .storage import FileTooLarge, Storage, StoredBlob, get_storage, too_large_message

# Thumbnails embedded in a HEIC are never used in place of the image (see `draft` in
# pillow-heif): we scale the decoded image ourselves. Depth and auxiliary images are ignored.
pillow_heif.register_heif_opener(thumbnails=False, depth_images=False, aux_images=False)

WEB_LONG_SIDE = 1600
THUMBNAIL_LONG_SIDE = 320
WEB_QUALITY = 85
THUMBNAIL_QUALITY = 80
RENDITION_MIME = "image/jpeg"
# A PDF's header may follow some junk, within the first 1024 bytes (PDF 32000-1, annex H).
SNIFF_BYTES = 1024
_HASH_CHUNK = 1024 * 1024

KIND_IMAGE = "image"
KIND_PDF = "pdf"
_PILLOW_FORMAT = {"image/jpeg": "JPEG", "image/png": "PNG", "image/heic": "HEIF",
                  "image/heif": "HEIF"}
_HEIC_BRANDS = {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs"}
_HEIF_BRANDS = {b"mif1", b"msf1", b"mif2"}
_AVIF_BRANDS = {b"avif", b"avis"}

# PDFium keeps global state: one call at a time in this process, whatever the document.
_pdfium_lock = threading.Lock()

NOT_SUPPORTED = _l("O arquivo não é uma imagem ou PDF válido. Envie uma foto (JPEG, PNG ou "
                   "HEIC) ou um PDF.")
EMPTY = _l("O arquivo está vazio. Escolha o arquivo novamente.")
CORRUPT_IMAGE = _l("A imagem está corrompida ou incompleta. Tire a foto ou exporte o arquivo "
                   "novamente.")
BROKEN_PDF = _l("O PDF está corrompido ou incompleto. Gere o PDF novamente e envie outra vez.")
ENCRYPTED_PDF = _l("O PDF está protegido por senha. Envie uma cópia sem senha.")


def _too_many_pixels(limit: int):
    return _l("A resolução da imagem passa do limite de %(limit)s megapixels. Envie uma foto "
              "com resolução menor.", limit=_decimal(limit / 1e6))


def _too_many_pages(pages: int, limit: int):
    return _l("O PDF tem %(pages)s páginas; o limite é %(limit)s páginas por arquivo. Divida o "
              "documento em arquivos menores.", pages=pages, limit=limit)


def _decimal(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".").replace(".", ",")


class UploadRejected(ServiceError):
    """The file is refused; `message` tells the client why (pt-BR)."""


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    max_pixels: int
    max_pdf_pages: int

    @classmethod
    def resolve(cls, max_bytes=None, max_pixels=None, max_pdf_pages=None) -> "Limits":
        """The given limits, the others from the app's config (or `Config` outside an app)."""
        config = current_app.config if has_app_context() else None

        def pick(value, key):
            if value is not None:
                return int(value)
            return int(config[key] if config is not None else getattr(Config, key))

        return cls(pick(max_bytes, "UPLOAD_MAX_BYTES"), pick(max_pixels, "UPLOAD_MAX_PIXELS"),
                   pick(max_pdf_pages, "UPLOAD_MAX_PDF_PAGES"))


@dataclass(frozen=True)
class Rendition:
    """A JPEG made from the upload, without any metadata."""
    data: bytes
    width: int
    height: int
    mime: str = RENDITION_MIME


@dataclass(frozen=True)
class PageRenditions:
    web: Rendition        # longest side WEB_LONG_SIDE (never enlarged)
    thumbnail: Rendition  # longest side THUMBNAIL_LONG_SIDE


@dataclass(frozen=True)
class ProcessedUpload:
    kind: str              # KIND_IMAGE or KIND_PDF
    mime: str              # of the original: image/jpeg, image/png, image/heic, image/heif,
                           # application/pdf
    sha256: str            # of the original bytes
    size: int              # of the original, in bytes
    width: int | None      # images: full size, after the EXIF rotation; PDFs: None
    height: int | None
    pages: int             # 1 for an image
    renditions: tuple[PageRenditions, ...]  # one per page

    @property
    def web(self) -> Rendition:
        return self.renditions[0].web

    @property
    def thumbnail(self) -> Rendition:
        return self.renditions[0].thumbnail


@dataclass(frozen=True)
class StoredPage:
    web: StoredBlob
    thumbnail: StoredBlob


@dataclass(frozen=True)
class StoredUpload:
    original: StoredBlob
    processed: ProcessedUpload
    renditions: tuple[StoredPage, ...]  # one per page, as in processed.renditions


def detect_mime(head: bytes) -> str | None:
    """The MIME type of a file we accept, from its first bytes; None for anything else."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if len(head) >= 12 and head[4:8] == b"ftyp":
        box_size = int.from_bytes(head[:4], "big")
        major = head[8:12]
        compatible = {head[i:i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)}
        brands = {major} | compatible
        if major in _AVIF_BRANDS or (major in _HEIF_BRANDS and brands & _AVIF_BRANDS
                                     and not brands & _HEIC_BRANDS):
            return None  # AVIF: no decoder here
        if major in _HEIC_BRANDS or (major in _HEIF_BRANDS and brands & _HEIC_BRANDS):
            return "image/heic"
        if major in _HEIF_BRANDS:
            return "image/heif"
        return None
    if b"%PDF-" in head[:SNIFF_BYTES]:
        return "application/pdf"
    return None


def process_upload(source: BinaryIO | bytes, *, max_bytes: int | None = None,
                   max_pixels: int | None = None,
                   max_pdf_pages: int | None = None) -> ProcessedUpload:
    """Identify, check and render one uploaded file (bytes, or a binary file read from its
    current position; one that cannot seek is copied to a temporary file). Stores nothing.

    Raises UploadRejected: empty, over `max_bytes`, not JPEG/PNG/HEIC/HEIF/PDF by content,
    more than `max_pixels` (checked from the header), an image that does not decode to the
    end, a PDF that is broken, password-protected or longer than `max_pdf_pages`.
    """
    limits = Limits.resolve(max_bytes, max_pixels, max_pdf_pages)
    if isinstance(source, (bytes, bytearray, memoryview)):
        source = io.BytesIO(bytes(source))
    with _seekable(source, limits.max_bytes) as fp:
        start = fp.tell()
        digest = hashlib.sha256()
        size = 0
        while chunk := fp.read(_HASH_CHUNK):
            size += len(chunk)
            if size > limits.max_bytes:
                raise UploadRejected(too_large_message(limits.max_bytes))
            digest.update(chunk)
        fp.seek(start)
        return _process(fp, digest.hexdigest(), size, limits)


def store_upload(stream: BinaryIO | bytes, storage: Storage | None = None, *,
                 max_bytes: int | None = None, max_pixels: int | None = None,
                 max_pdf_pages: int | None = None) -> StoredUpload:
    """Store an upload's original bytes (streamed, never held whole in memory, aborted past
    `max_bytes`), check it, make its renditions and store them too. `storage` defaults to the
    app's (`get_storage()`, which needs an app context).

    A refused file leaves nothing behind (unless identical content was already stored: the
    store is shared). The caller records the digests and counts the references.

    Raises UploadRejected, as `process_upload`.
    """
    limits = Limits.resolve(max_bytes, max_pixels, max_pdf_pages)
    storage = storage if storage is not None else get_storage()
    try:
        original = storage.put(stream, max_bytes=limits.max_bytes)
    except FileTooLarge:
        raise UploadRejected(too_large_message(limits.max_bytes)) from None
    try:
        with storage.open(original.sha256) as stored:
            with _seekable(stored, limits.max_bytes) as fp:
                processed = _process(fp, original.sha256, original.size, limits)
    except UploadRejected:
        if original.created:
            storage.delete(original.sha256)
        raise
    pages = tuple(
        StoredPage(web=storage.put(page.web.data), thumbnail=storage.put(page.thumbnail.data))
        for page in processed.renditions
    )
    return StoredUpload(original=original, processed=processed, renditions=pages)


class _seekable:
    """The file itself when it can seek, else a temporary copy (a request body, an object
    store's stream) of at most `max_bytes` + 1 bytes: enough to see that a limit is passed."""

    def __init__(self, fp, max_bytes: int):
        self.fp, self.max_bytes, self.copy = fp, max_bytes, None

    def __enter__(self):
        if getattr(self.fp, "seekable", lambda: False)():
            return self.fp
        self.copy = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        remaining = self.max_bytes + 1
        while remaining > 0 and (chunk := self.fp.read(min(_HASH_CHUNK, remaining))):
            self.copy.write(chunk)
            remaining -= len(chunk)
        self.copy.seek(0)
        return self.copy

    def __exit__(self, *exc):
        if self.copy is not None:
            self.copy.close()


def _process(fp: BinaryIO, sha256: str, size: int, limits: Limits) -> ProcessedUpload:
    if size == 0:
        raise UploadRejected(EMPTY)
    start = fp.tell()
    mime = detect_mime(fp.read(SNIFF_BYTES))
    fp.seek(start)
    if mime is None:
        raise UploadRejected(NOT_SUPPORTED)
    if mime == "application/pdf":
        if _pdf_isolated():
            from .pdf_render import render_isolated

            pages, renditions = render_isolated(fp, limits.max_pdf_pages, _pdf_timeout())
        else:
            pages, renditions = _render_pdf(fp, limits.max_pdf_pages)
        return ProcessedUpload(kind=KIND_PDF, mime=mime, sha256=sha256, size=size, width=None,
                               height=None, pages=pages, renditions=renditions)
    width, height, page = _render_image(fp, _PILLOW_FORMAT[mime], limits.max_pixels)
    return ProcessedUpload(kind=KIND_IMAGE, mime=mime, sha256=sha256, size=size, width=width,
                           height=height, pages=1, renditions=(page,))


# Errors Pillow and its plugins raise on a file that is not what its header promised.
_DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
                  IndexError, KeyError, TypeError, RuntimeError)


def _open_image(fp: BinaryIO, pillow_format: str, max_pixels: int) -> Image.Image:
    """Open (header only) with the one plugin the content calls for; refuse bombs before any
    pixel is decoded."""
    # A truncated photo is a refusal: some libraries (WeasyPrint, on import) turn this
    # process-wide switch on; it must be off whenever a client's file is decoded.
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        # Pillow's own check (Image.MAX_IMAGE_PIXELS, left at its default) warns past that
        # limit and raises past twice it: both are refusals. Our limit, usually lower, is
        # checked just below from the same header. (catch_warnings swaps a global filter
        # list; a thread racing it at worst gets a warning instead of an error, and is still
        # held to max_pixels below.)
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(fp, formats=[pillow_format])
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        pillow_limit = Image.MAX_IMAGE_PIXELS or max_pixels
        raise UploadRejected(_too_many_pixels(min(max_pixels, pillow_limit))) from None
    except _DECODE_ERRORS:
        raise UploadRejected(CORRUPT_IMAGE) from None
    width, height = im.size
    if width < 1 or height < 1 or width * height > max_pixels:
        im.close()
        raise UploadRejected(CORRUPT_IMAGE if min(width, height) < 1
                             else _too_many_pixels(max_pixels))
    return im


def _render_image(fp: BinaryIO, pillow_format: str, max_pixels: int):
    start = fp.tell()
    if pillow_format == "PNG":
        # Check every chunk's CRC first (no decoding); `load` alone would not notice a
        # corrupted ancillary chunk.
        with _open_image(fp, pillow_format, max_pixels) as im:
            try:
                im.verify()
            except _DECODE_ERRORS:
                raise UploadRejected(CORRUPT_IMAGE) from None
        fp.seek(start)
    with _open_image(fp, pillow_format, max_pixels) as im:
        full_width, full_height = im.size
        if pillow_format == "JPEG":
            # Decode at 1/2, 1/4 or 1/8 scale, never below the rendition's size.
            im.draft("RGB", _fit(im.size, WEB_LONG_SIDE))
        try:
            im.load()
        except _DECODE_ERRORS:
            raise UploadRejected(CORRUPT_IMAGE) from None
        orientation = _orientation(im)  # after load: a PNG's eXIf chunk may follow the pixels
        icc_profile = im.info.get("icc_profile")
        # Scaled before it is turned upright and colour-converted: less work, same result.
        web = _srgb(_upright(_web(_flatten(im)), orientation), icc_profile)
        if web is im:
            web = im.copy()  # `im` is closed on leaving this block
    thumbnail = _resize(web, THUMBNAIL_LONG_SIDE)
    if orientation in (5, 6, 7, 8):
        full_width, full_height = full_height, full_width
    page = PageRenditions(web=_encode(web, WEB_QUALITY),
                          thumbnail=_encode(thumbnail, THUMBNAIL_QUALITY))
    return full_width, full_height, page


def _orientation(im: Image.Image) -> int:
    try:
        value = im.getexif().get(0x0112, 1)
    except _DECODE_ERRORS:  # unreadable EXIF: the photo is still a photo
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _upright(im: Image.Image, orientation: int) -> Image.Image:
    # The table of ImageOps.exif_transpose, applied to an already scaled image; done here so
    # an unreadable EXIF block cannot fail it.
    method = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
              4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
              6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}.get(orientation)
    return im.transpose(method) if method is not None else im


def _flatten(im: Image.Image) -> Image.Image:
    """RGB (or CMYK, for its ICC conversion later); transparency on white, 16-bit to 8-bit."""
    if im.mode.startswith("I"):
        im = im.convert("I").point(lambda v: v / 256).convert("L")
    if im.mode == "La":
        im = im.convert("LA")
    if im.mode in ("RGB", "CMYK"):
        return im
    if im.has_transparency_data:
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im.convert("RGB")


def _srgb(im: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Pixels converted to sRGB from the source's ICC profile (e.g. an iPhone's Display P3),
    which is then dropped with all the other metadata; a plain RGB conversion when there is
    no usable profile or it already is sRGB."""
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            if not (im.mode == "RGB"
                    and "srgb" in ImageCms.getProfileDescription(source).lower()):
                return ImageCms.profileToProfile(im, source, _SRGB, outputMode="RGB")
        except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
            pass
    return im if im.mode == "RGB" else im.convert("RGB")


_SRGB = ImageCms.createProfile("sRGB")


def _fit(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    width, height = size
    if max(width, height) <= long_side:
        return width, height
    if width >= height:
        return long_side, max(1, round(height * long_side / width))
    return max(1, round(width * long_side / height)), long_side


def _resize(im: Image.Image, long_side: int, resample: Image.Resampling = Image.Resampling.LANCZOS,
            reducing_gap: float = 2.0) -> Image.Image:
    size = _fit(im.size, long_side)
    if size == im.size:
        return im
    # reducing_gap: a fast integer reduce (box average) first, then the filter over the
    # last factor (below reducing_gap).
    return im.resize(size, resample, reducing_gap=reducing_gap)


def _web(im: Image.Image) -> Image.Image:
    """The web rendition's pixels. Like the JPEG decoder's DCT scaling, a box average by a
    whole factor does most of the work; bicubic does the last step of less than 2x, where it
    is as sharp as Lanczos and faster (the HEIC path: 45 ms instead of 110 ms at 12 MP)."""
    return _resize(im, WEB_LONG_SIDE, Image.Resampling.BICUBIC, reducing_gap=1.0)


def _encode(im: Image.Image, quality: int) -> Rendition:
    if im.mode != "RGB":
        im = im.convert("RGB")
    # Only what is passed to save() is written: no exif, icc_profile, xmp or comment.
    # Emptying `info` as well keeps anything copied along by transpose/resize out.
    im.info = {}
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return Rendition(data=out.getvalue(), width=im.width, height=im.height)


def _pdf_isolated() -> bool:
    from flask import current_app, has_app_context

    return bool(current_app.config.get("PDF_RENDER_ISOLATED", True)) if has_app_context() else False


def _pdf_timeout() -> float:
    from flask import current_app

    return float(current_app.config.get("PDF_RENDER_TIMEOUT", 60))


def _render_pdf(fp: BinaryIO, max_pages: int):
    """Page count and one PageRenditions per page. PDFium runs under the lock, one call at a
    time; scaling and encoding run outside it, and only one page's pixels exist at a time."""
    with _pdfium_lock:
        try:
            pdf = pypdfium2.PdfDocument(fp)
        except pypdfium2.PdfiumError as exc:
            if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
                raise UploadRejected(ENCRYPTED_PDF) from None
            raise UploadRejected(BROKEN_PDF) from None
    try:
        with _pdfium_lock:
            pages = len(pdf)
            if pages > max_pages:
                raise UploadRejected(_too_many_pages(pages, max_pages))
            try:
                pdf.init_forms()  # draw filled-in form fields too
            except pypdfium2.PdfiumError:
                pass
        renditions = []
        for index in range(pages):
            with _pdfium_lock:
                rendered = _render_pdf_page(pdf, index)
            web = _web(rendered)
            thumbnail = _resize(web, THUMBNAIL_LONG_SIDE)
            renditions.append(PageRenditions(web=_encode(web, WEB_QUALITY),
                                             thumbnail=_encode(thumbnail, THUMBNAIL_QUALITY)))
            del rendered, web, thumbnail
    finally:
        with _pdfium_lock:
            pdf.close()
    return pages, tuple(renditions)


def _render_pdf_page(pdf, index: int) -> Image.Image:
    try:
        page = pdf[index]
        try:
            width, height = page.get_size()  # points, with the page's /Rotate applied
            if not (width > 0 and height > 0):
                raise UploadRejected(BROKEN_PDF)
            bitmap = page.render(scale=WEB_LONG_SIDE / max(width, height),
                                 fill_color=(255, 255, 255, 255))
            try:
                return bitmap.to_pil().convert("RGB")  # a copy: the bitmap's memory goes
            finally:
                bitmap.close()
        finally:
            page.close()
    except pypdfium2.PdfiumError:
        raise UploadRejected(BROKEN_PDF) from None
