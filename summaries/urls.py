from django.urls import path

from summaries import api

urlpatterns = [
    path("trials/<str:code>/summary/", api.TrialSummaryApi.as_view(), name="trial-summary"),
    path("trials/<str:code>/summary/subjects.csv", api.TrialSummarySubjectsCsvApi.as_view(),
         name="trial-summary-subjects-csv"),
]
