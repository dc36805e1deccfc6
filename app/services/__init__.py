"""Service functions: they change state, write the audit record and know nothing of HTTP."""


class ServiceError(Exception):
    """A refusal the user must read: `message` is already translated (lazy gettext)."""

    def __init__(self, message):
        super().__init__(str(message))
        self.message = message
