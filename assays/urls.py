from rest_framework.routers import SimpleRouter

from assays import api

router = SimpleRouter()
router.register("results", api.ResultViewSet, basename="result")
router.register("lab-draws", api.DrawViewSet, basename="lab-draw")
router.register("analytes", api.AnalyteViewSet, basename="analyte")
urlpatterns = router.urls
