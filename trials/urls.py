from django.urls import path

from trials import api

urlpatterns = [
    path("personal-tokens/", api.PersonalTokenListApi.as_view(), name="personal-token-list"),
    path("personal-tokens/<int:pk>/revoke/", api.PersonalTokenRevokeApi.as_view(), name="personal-token-revoke"),
]
