"""A clear answer to an upload with more files than UPLOAD_MAX_FILES.

Django stops reading such a request (`TooManyFilesSent`, from DATA_UPLOAD_MAX_NUMBER_FILES)
and answers a bare "400 Bad Request", or a debug page. This middleware reads the upload first
and sends the person back to the page they uploaded from, with a message that says what the
limit is and what to do instead. Nothing was imported: the request was never parsed.
"""
from __future__ import annotations

from django.conf import settings
from django.contrib import messages
from django.core.exceptions import TooManyFilesSent
from django.http import HttpResponseRedirect, UnreadablePostError


class UploadLimitMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        if request.method == "POST" and request.content_type == "multipart/form-data":
            try:
                request.FILES  # parses the body once; every later reader gets the same result
            except UnreadablePostError:
                pass  # the client went away mid-upload: what Django does without us (CSRF 403)
            except TooManyFilesSent:
                messages.error(request, (
                    f"Nothing was uploaded: one upload takes at most {settings.DATA_UPLOAD_MAX_NUMBER_FILES} "
                    "files (UPLOAD_MAX_FILES). Upload them in parts, put the documents in one .jsonl or .csv "
                    "file, or use `manage.py import_corpus` on a folder."))
                return HttpResponseRedirect(request.get_full_path())
        return self.get_response(request)
