from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

import config.lockout_admin  # noqa: F401  (the login-throttling pages, for data managers)

handler404 = "config.api.page_not_found"  # the API's error body for an unrouted /api/ path

admin.site.site_header = "CAR-T trial data"
admin.site.site_title = "CAR-T trial data"
admin.site.index_title = "Trial administration"

urlpatterns = [
    path("admin/", include("summaries.admin")),  # a trial's summary page and its plots
    path("admin/", admin.site.urls),
    path("api/<version>/", include("trials.urls")),
    path("api/<version>/", include("patients.api.urls")),
    path("api/<version>/", include("assays.urls")),
    path("api/<version>/", include("audit.urls")),
    path("api/<version>/", include("locking.urls")),
    path("api/<version>/", include("signatures.urls")),
    path("api/<version>/", include("dataqueries.urls")),
    path("api/<version>/", include("exports.urls")),
    path("api/<version>/", include("summaries.urls")),
    path("api/schema/", SpectacularAPIView.as_view(api_version="v1"), name="schema"),
    # Split: the page loads its initialising script as a file of its own (no inline script for the CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api-docs"),
]
