from ..extensions import db
from .types import UTCDateTime, utcnow


class StoredFile(db.Model):
    """A blob in the storage, named by its SHA-256. Referenced by document pages; removed
    from the storage only when no row references it any more."""

    __tablename__ = "stored_file"

    sha256 = db.Column(db.String(64), primary_key=True)
    size = db.Column(db.BigInteger, nullable=False)
    mime = db.Column(db.String(100), nullable=False)
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)


class RequestDocument(db.Model):
    """One kind of document a request needs (the ID; for e-CNPJ the company's constitution),
    with its review status."""

    __tablename__ = "request_document"

    STATUSES = ("open", "submitted", "approved", "pendency")

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False,
                           index=True)
    kind = db.Column(db.String(30), nullable=False)
    status = db.Column(db.String(12), nullable=False, default="open")
    # The round of sending new pages belong to: 1, then one more after each pendência.
    round = db.Column(db.Integer, nullable=False, default=1)
    submitted_at = db.Column(UTCDateTime)
    reviewed_at = db.Column(UTCDateTime)
    reviewed_by_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))

    request = db.relationship("CertificateRequest", backref=db.backref(
        "documents", order_by="RequestDocument.id"))
    reviewed_by = db.relationship("StaffUser")

    @property
    def is_resubmission(self) -> bool:
        return self.round > 1

    def pages_of_round(self, round_no: int | None = None):
        """The pages of the current round of sending (or of `round_no`)."""
        current = self.round if round_no is None else round_no
        return [p for p in self.all_pages if p.round == current]

    __table_args__ = (db.UniqueConstraint("request_id", "kind"),)


class DocumentPage(db.Model):
    """One uploaded file (a photo, or a PDF with its pages). The original bytes are evidence
    and never change; its renditions (one per page) carry no metadata."""

    __tablename__ = "document_page"

    id = db.Column(db.Integer, primary_key=True)
    document_id = db.Column(db.Integer, db.ForeignKey("request_document.id"), nullable=False,
                            index=True)
    position = db.Column(db.Integer, nullable=False)
    # Which round of sending it belongs to (1 = first sending, 2 = after one pendência…).
    round = db.Column(db.Integer, nullable=False, default=1)
    kind = db.Column(db.String(10), nullable=False)  # image | pdf
    mime = db.Column(db.String(100), nullable=False)
    original_sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"), nullable=False,
                                index=True)
    width = db.Column(db.Integer)
    height = db.Column(db.Integer)
    page_count = db.Column(db.Integer, nullable=False, default=1)
    display_name = db.Column(db.String(120))  # sanitized, for display only
    uploaded_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    uploaded_ip = db.Column(db.String(45))

    document = db.relationship("RequestDocument", backref=db.backref(
        "all_pages", order_by="DocumentPage.position, DocumentPage.id"))
    original = db.relationship("StoredFile")
    renditions = db.relationship("PageRendition", back_populates="page",
                                 order_by="PageRendition.index", cascade="all, delete-orphan")


class PageRendition(db.Model):
    """The web-sized image and the thumbnail of one page of an upload (no metadata)."""

    __tablename__ = "page_rendition"

    id = db.Column(db.Integer, primary_key=True)
    page_id = db.Column(db.Integer, db.ForeignKey("document_page.id"), nullable=False, index=True)
    index = db.Column(db.Integer, nullable=False)
    web_sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"), nullable=False,
                           index=True)
    thumbnail_sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"),
                                 nullable=False, index=True)
    width = db.Column(db.Integer, nullable=False)
    height = db.Column(db.Integer, nullable=False)

    page = db.relationship("DocumentPage", back_populates="renditions")


class Pendency(db.Model):
    """A problem the agent found in one kind of document, and its resolution."""

    __tablename__ = "pendency"

    id = db.Column(db.Integer, primary_key=True)
    document_id = db.Column(db.Integer, db.ForeignKey("request_document.id"), nullable=False,
                            index=True)
    reason = db.Column(db.String(40), nullable=False)
    note = db.Column(db.Text)
    raised_by_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"), nullable=False)
    raised_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    resolved_at = db.Column(UTCDateTime)

    document = db.relationship("RequestDocument", backref=db.backref("pendencies", order_by="Pendency.id"))
    raised_by = db.relationship("StaffUser")
