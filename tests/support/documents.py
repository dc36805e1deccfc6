"""Document files made in the tests: phone-like photos, a HEIC, a PDF, broken ones."""
import io

from PIL import Image, ImageDraw


def jpeg(width=1200, height=900, color=(200, 180, 150), text="FRENTE", quality=85) -> bytes:
    image = Image.new("RGB", (width, height), color)
    draw = ImageDraw.Draw(image)
    draw.rectangle([width // 10, height // 10, width * 9 // 10, height * 9 // 10], outline=(0, 0, 0), width=8)
    draw.text((width // 5, height // 2), text, fill=(0, 0, 0))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality)
    return out.getvalue()


def png(width=800, height=600) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 200)).save(out, "PNG")
    return out.getvalue()


def heic(width=1000, height=750) -> bytes:
    import pillow_heif

    pillow_heif.register_heif_opener()
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 160, 90)).save(out, "HEIF", quality=60)
    return out.getvalue()


def pdf(pages=1) -> bytes:
    images = [Image.new("RGB", (620, 877), (255, 255, 255)) for _ in range(pages)]
    for i, im in enumerate(images):
        ImageDraw.Draw(im).text((50, 50), f"CNH Digital pagina {i + 1}", fill=(0, 0, 0))
    out = io.BytesIO()
    images[0].save(out, "PDF", save_all=True, append_images=images[1:])
    return out.getvalue()
