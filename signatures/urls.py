from django.urls import path

from signatures.api import SignatureDetailApi, SignatureListApi

urlpatterns = [
    path("signatures/", SignatureListApi.as_view(), name="signature-list"),
    path("signatures/<int:pk>/", SignatureDetailApi.as_view(), name="signature-detail"),
]
