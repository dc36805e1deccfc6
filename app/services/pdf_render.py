"""PDF pages rendered in a child process.

A scanned page decodes inside PDFium at full resolution (tens of MB for one A4 page at
300 dpi), and a hostile PDF can make PDFium loop or crash. Rendering in a short-lived child
keeps that memory, any crash and any hang out of the web worker: the child gets the PDF on
stdin and answers with the renditions (pickled: it is our own process) on stdout, and is
killed past PDF_RENDER_TIMEOUT seconds.

    python -m app.services.pdf_render MAX_PAGES < file.pdf > result.pickle
"""
import io
import os
import pickle
import subprocess
import sys

# Exit codes of the child, other than 0.
EXIT_BROKEN, EXIT_ENCRYPTED, EXIT_TOO_MANY = 3, 4, 5


def render_isolated(fp, max_pages: int, timeout: float):
    """(pages, renditions) of the PDF read from `fp`, as `uploads._render_pdf` gives them.
    Raises uploads.UploadRejected with the same messages."""
    from . import uploads

    argv = [sys.executable, "-m", "app.services.pdf_render", str(max_pages)]
    try:
        try:
            fd = fp.fileno()
        except (AttributeError, OSError, io.UnsupportedOperation):
            proc = subprocess.run(argv, input=fp.read(), capture_output=True, timeout=timeout)
        else:
            # A real file (the stored original): the child reads it from the descriptor, so
            # the PDF's bytes never sit in this process's memory. A buffered reader's own
            # position may differ from the descriptor's: set the descriptor's.
            os.lseek(fd, fp.tell(), os.SEEK_SET)
            proc = subprocess.run(argv, stdin=fd, capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise uploads.UploadRejected(uploads.BROKEN_PDF) from None
    if proc.returncode == 0:
        return pickle.loads(proc.stdout)
    if proc.returncode == EXIT_ENCRYPTED:
        raise uploads.UploadRejected(uploads.ENCRYPTED_PDF)
    if proc.returncode == EXIT_TOO_MANY:
        raise uploads.UploadRejected(uploads._too_many_pages(int(proc.stdout), max_pages))
    # EXIT_BROKEN, a crash of PDFium (a signal), or anything else.
    raise uploads.UploadRejected(uploads.BROKEN_PDF)


def _child(max_pages: int) -> int:
    from . import uploads

    data = sys.stdin.buffer.read()
    try:
        result = uploads._render_pdf(io.BytesIO(data), max_pages)
    except uploads.UploadRejected as exc:
        if exc.message is uploads.ENCRYPTED_PDF:
            return EXIT_ENCRYPTED
        if exc.message is uploads.BROKEN_PDF:
            return EXIT_BROKEN
        import pypdfium2

        sys.stdout.write(str(len(pypdfium2.PdfDocument(data))))
        return EXIT_TOO_MANY
    sys.stdout.buffer.write(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL))
    return 0


if __name__ == "__main__":
    sys.exit(_child(int(sys.argv[1])))
