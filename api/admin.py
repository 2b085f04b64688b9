"""Staff create and revoke API keys here. A new key is shown once, in the message after saving;
only its hash is stored (api/keys.py)."""
from __future__ import annotations

from django.contrib import admin, messages
from django.utils import timezone

from .keys import assign_new_secret
from .models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("name", "prefix", "access", "collection_list", "created_at", "last_used_at", "expires_at",
                    "state")
    list_filter = ("can_write",)
    search_fields = ("name", "prefix")
    filter_horizontal = ("collections",)
    readonly_fields = ("prefix", "created_by", "created_at", "last_used_at", "revoked_at")
    actions = ["revoke_keys"]

    @admin.display(description="Collections")
    def collection_list(self, key):
        return ", ".join(key.collections.values_list("slug", flat=True))

    @admin.display(description="State")
    def state(self, key):
        return "revoked" if key.revoked else "expired" if key.expired else "active"

    def get_queryset(self, request):
        return super().get_queryset(request).prefetch_related("collections")

    def save_model(self, request, obj, form, change):
        key = None
        if not change:
            key = assign_new_secret(obj)
            obj.created_by = request.user.get_username()
        super().save_model(request, obj, form, change)
        if key:
            messages.warning(request, f"The API key of {obj.name!r} is {key} : copy it now, it is shown only this "
                                      f"once (only its hash is stored).")

    @admin.action(description="Revoke the selected API keys")
    def revoke_keys(self, request, queryset):
        count = queryset.filter(revoked_at=None).update(revoked_at=timezone.now())
        self.message_user(request, f"{count} key(s) revoked; requests with them are refused from now on.")
