"""The videoconference: the room, who connected, what was recorded and captured.

One `Conference` is one room of one request. A scheduled room admits the client's first entry
from `opens_at` for `window_minutes`; an instant room (e-Notariado) opens when the agent presses
"Iniciar". Rejoins are admitted until the room ends. The access code is not stored: it is
derived from `code_nonce` with the app's SECRET_KEY (like access links), so the database alone
does not reveal it, and the agent can resend the same code.

The media process writes each participant connection's recording as a series of short WebM
segments on disk (see app/media/recorder.py); `RecordingSegment` rows are made from them when
the room ends, with each file's SHA-256. The processed file (both participants in one) is a
`StoredFile`.
"""
from ..extensions import db
from .types import UTCDateTime, utcnow


class Conference(db.Model):
    __tablename__ = "conference"

    KINDS = ("scheduled", "instant")
    # scheduled: waiting for its time; open: admitting; ended: "Encerrar conferência" pressed;
    # no_show: the window passed without the client; cancelled: replaced by a reschedule.
    STATES = ("scheduled", "open", "ended", "no_show", "cancelled")
    # none → recording → processing → done | failed
    RECORDING_STATES = ("none", "recording", "processing", "done", "failed")

    id = db.Column(db.Integer, primary_key=True)
    request_id = db.Column(db.Integer, db.ForeignKey("certificate_request.id"), nullable=False,
                           index=True)
    kind = db.Column(db.String(12), nullable=False, default="scheduled")
    state = db.Column(db.String(12), nullable=False, default="scheduled", index=True)
    opens_at = db.Column(UTCDateTime, nullable=False, index=True)
    window_minutes = db.Column(db.Integer, nullable=False, default=30)
    code_nonce = db.Column(db.String(32), nullable=False)
    # Wrong codes typed for this room, and the pause they caused.
    failed_codes = db.Column(db.Integer, nullable=False, default=0)
    locked_until = db.Column(UTCDateTime)
    agent_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))
    created_by_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))
    created_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    client_first_entry_at = db.Column(UTCDateTime)
    started_at = db.Column(UTCDateTime)  # "Iniciar conferência"
    ended_at = db.Column(UTCDateTime)  # "Encerrar conferência" (or no-show / cancel)
    ended_by_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))
    # Which media process holds the room (its ident from the heartbeat).
    media_node = db.Column(db.String(120))
    recording_state = db.Column(db.String(12), nullable=False, default="none")
    recording_started_at = db.Column(UTCDateTime)
    recording_stopped_at = db.Column(UTCDateTime)
    # Set when part of the recording is known lost (media process died, disk full, gaps).
    recording_incomplete = db.Column(db.Boolean, nullable=False, default=False)
    recording_notes = db.Column(db.JSON)  # gaps, duration check, errors of the processing job
    recording_sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"))
    recording_thumbnail_sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"))
    recording_duration_ms = db.Column(db.Integer)
    processed_at = db.Column(UTCDateTime)

    request = db.relationship("CertificateRequest", backref=db.backref(
        "conferences", order_by="Conference.id"))
    agent = db.relationship("StaffUser", foreign_keys=[agent_id])
    created_by = db.relationship("StaffUser", foreign_keys=[created_by_id])
    ended_by = db.relationship("StaffUser", foreign_keys=[ended_by_id])
    recording = db.relationship("StoredFile", foreign_keys=[recording_sha256])
    recording_thumbnail = db.relationship("StoredFile", foreign_keys=[recording_thumbnail_sha256])

    @property
    def closes_at(self):
        """End of the window for the client's first entry."""
        from datetime import timedelta
        return self.opens_at + timedelta(minutes=self.window_minutes)


class ConferenceConnection(db.Model):
    """One browser's connection to the room. A newer connection of the same role replaces
    the older one. Its recording is one series of segments, named by `conn_id`."""

    __tablename__ = "conference_connection"

    ROLES = ("client", "agent")

    id = db.Column(db.Integer, primary_key=True)
    conference_id = db.Column(db.Integer, db.ForeignKey("conference.id"), nullable=False,
                              index=True)
    role = db.Column(db.String(10), nullable=False)
    conn_id = db.Column(db.String(32), nullable=False, unique=True)
    staff_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))
    joined_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    left_at = db.Column(UTCDateTime)
    # left | replaced | dropped | media_lost | ended
    end_reason = db.Column(db.String(20))
    ip = db.Column(db.String(45))
    user_agent = db.Column(db.String(400))

    conference = db.relationship("Conference", backref=db.backref(
        "connections", order_by="ConferenceConnection.id"))


class RecordingSegment(db.Model):
    """One closed segment file of one connection's recording, hashed into the dossier."""

    __tablename__ = "recording_segment"

    id = db.Column(db.Integer, primary_key=True)
    conference_id = db.Column(db.Integer, db.ForeignKey("conference.id"), nullable=False,
                              index=True)
    conn_id = db.Column(db.String(32), nullable=False)
    role = db.Column(db.String(10), nullable=False)
    seq = db.Column(db.Integer, nullable=False)
    path = db.Column(db.String(400), nullable=False)  # relative to RECORDINGS_ROOT
    sha256 = db.Column(db.String(64), nullable=False)
    size = db.Column(db.BigInteger, nullable=False)
    started_at = db.Column(UTCDateTime, nullable=False)
    duration_ms = db.Column(db.Integer, nullable=False)
    width = db.Column(db.Integer)
    height = db.Column(db.Integer)
    video_frames = db.Column(db.Integer, nullable=False, default=0)
    audio_packets = db.Column(db.Integer, nullable=False, default=0)

    conference = db.relationship("Conference", backref=db.backref(
        "segments", order_by="RecordingSegment.started_at, RecordingSegment.seq"))

    __table_args__ = (db.UniqueConstraint("conference_id", "conn_id", "seq"),)


class ConferenceCapture(db.Model):
    """A still of the document or the face photo, taken by the client's browser from its own
    camera at the agent's request. The face photo is accepted or rejected by the agent."""

    __tablename__ = "conference_capture"

    KINDS = ("still", "face")
    # requested → received → accepted | rejected (face); requested → received (still);
    # requested → cancelled when a newer request of the same kind replaces it.
    STATUSES = ("requested", "received", "accepted", "rejected", "cancelled")

    id = db.Column(db.Integer, primary_key=True)
    conference_id = db.Column(db.Integer, db.ForeignKey("conference.id"), nullable=False,
                              index=True)
    kind = db.Column(db.String(10), nullable=False)
    status = db.Column(db.String(12), nullable=False, default="requested")
    requested_by_id = db.Column(db.Integer, db.ForeignKey("staff_user.id"))
    requested_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    received_at = db.Column(UTCDateTime)
    decided_at = db.Column(UTCDateTime)
    file_sha256 = db.Column(db.String(64), db.ForeignKey("stored_file.sha256"), index=True)
    width = db.Column(db.Integer)
    height = db.Column(db.Integer)

    conference = db.relationship("Conference", backref=db.backref(
        "captures", order_by="ConferenceCapture.id"))
    file = db.relationship("StoredFile")
    requested_by = db.relationship("StaffUser")


class ConferenceConsent(db.Model):
    """The consent the client accepted before joining: the exact text, when, from where."""

    __tablename__ = "conference_consent"

    id = db.Column(db.Integer, primary_key=True)
    conference_id = db.Column(db.Integer, db.ForeignKey("conference.id"), nullable=False,
                              index=True)
    text = db.Column(db.Text, nullable=False)
    locale = db.Column(db.String(10), nullable=False)
    accepted_at = db.Column(UTCDateTime, nullable=False, default=utcnow)
    ip = db.Column(db.String(45))
    user_agent = db.Column(db.String(400))

    conference = db.relationship("Conference", backref=db.backref(
        "consents", order_by="ConferenceConsent.id"))
