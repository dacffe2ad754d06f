from django.urls import path
from rest_framework.routers import SimpleRouter

from trials import api, token_api

router = SimpleRouter()
router.register("trials", api.TrialViewSet, basename="trial")

DESIGN: list[tuple[str, type[api.TrialDesignListApi], str]] = [
    ("sites", api.TrialSiteListApi, "trial-site-list"),
    ("cohorts", api.CohortListApi, "trial-cohort-list"),
    ("products", api.ProductListApi, "trial-product-list"),
    ("dose-levels", api.DoseLevelListApi, "trial-dose-level-list"),
    ("lymphodepletion-regimens", api.RegimenListApi, "trial-regimen-list"),
    ("visits", api.VisitListApi, "trial-visit-list"),
    ("eligibility-criteria", api.CriterionListApi, "trial-criterion-list"),
]
urlpatterns = [
    *router.urls,
    *(path(f"trials/<str:code>/{part}/", view.as_view(), name=name) for part, view, name in DESIGN),
    path("personal-tokens/", token_api.PersonalTokenListApi.as_view(), name="personal-token-list"),
    path("personal-tokens/<int:pk>/revoke/", token_api.PersonalTokenRevokeApi.as_view(),
         name="personal-token-revoke"),
]
