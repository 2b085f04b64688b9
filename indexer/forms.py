"""Forms of the collection admin: the multi-file document upload."""
from __future__ import annotations

from django import forms

from .extraction import SUPPORTED_EXTENSIONS


class MultipleFileInput(forms.ClearableFileInput):
    allow_multiple_selected = True


class MultipleFileField(forms.FileField):
    """A file field that accepts several files at once (Django's documented recipe)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("widget", MultipleFileInput(attrs={"accept": ",".join(SUPPORTED_EXTENSIONS)}))
        super().__init__(*args, **kwargs)

    def clean(self, data, initial=None):
        # Each file is judged by the import engine and reported on its own (an empty file is
        # "rejected: the file is empty"), so only "no file at all" is a form error here.
        files = [f for f in (data if isinstance(data, (list, tuple)) else [data]) if f]
        if not files and self.required:
            raise forms.ValidationError(self.error_messages["required"], code="required")
        return files


class UploadDocumentsForm(forms.Form):
    files = MultipleFileField(
        help_text=f"One or more files: {', '.join(SUPPORTED_EXTENSIONS)}. A .txt/.md/.html/.pdf file is one "
                  "document (its file name is the external id); .jsonl and .csv files hold many.",
    )
    id_column = forms.CharField(required=False, max_length=100,
                                help_text="JSONL field / CSV column of the external id (default: _id or id).")
    title_column = forms.CharField(required=False, max_length=100,
                                   help_text="JSONL field / CSV column of the title (default: title).")
    text_column = forms.CharField(required=False, max_length=100,
                                  help_text="JSONL field / CSV column of the text (default: text).")
