from django.conf import settings
from django.http import JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from .health import run_checks
from .metrics import bearer_token_matches


def may_see_health_details(request) -> bool:
    """Staff, or a request with `Authorization: Bearer <HEALTH_TOKEN>`."""
    user = getattr(request, "user", None)
    return bool(user is not None and user.is_authenticated and user.is_staff) or bearer_token_matches(
        request, settings.HEALTH_TOKEN)


@never_cache
@require_GET
def healthz(request):
    """Health of every part; 503 when any part is down. Anyone reads the status; the details
    (which part, engine URL, versions, worker host names) are for staff and the health token."""
    healthy, checks = run_checks()
    status = 200 if healthy else 503
    if not may_see_health_details(request):
        return JsonResponse({"status": "ok" if healthy else "down"}, status=status)
    down = [name for name, check in checks.items() if not check["ok"]]
    body = {"status": "ok" if healthy else "down", "down": down, "checks": checks}
    return JsonResponse(body, status=status)
