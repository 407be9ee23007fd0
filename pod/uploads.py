"""An upload handler that stops reading a proof file once it passes the size limit.

Django would otherwise stream any size to a temporary file before a view could refuse it. Put
it first in `request.upload_handlers` before the body is parsed; a view then answers 413 when
`request.upload_too_large` names a field.
"""

from django.conf import settings
from django.core.files.uploadhandler import FileUploadHandler, SkipFile


class ProofUploadLimit(FileUploadHandler):
    def __init__(self, request=None) -> None:
        super().__init__(request)
        self.received = 0

    def new_file(self, field_name, *args, **kwargs) -> None:
        super().new_file(field_name, *args, **kwargs)
        self.received = 0
        self.limit = (
            settings.POD_SIGNATURE_MAX_BYTES if field_name == "signature" else settings.POD_MAX_UPLOAD_BYTES
        )

    def receive_data_chunk(self, raw_data: bytes, start: int) -> bytes:
        self.received += len(raw_data)
        if self.received > self.limit:
            self.request.upload_too_large = self.field_name
            raise SkipFile()  # the rest of this file is read and dropped, never stored
        return raw_data

    def file_complete(self, file_size: int) -> None:
        return None  # the next handler builds the file
