from rest_framework.routers import SimpleRouter

from patients.api import views

router = SimpleRouter()
router.register("subjects", views.SubjectViewSet, basename="subject")
router.register("collections", views.CollectionViewSet, basename="collection")
router.register("donor-collections", views.DonorCollectionViewSet, basename="donor-collection")
router.register("lots", views.LotViewSet, basename="lot")
router.register("bridging", views.BridgingViewSet, basename="bridging")
router.register("lymphodepletion-courses", views.CourseViewSet, basename="ld-course")
router.register("infusions", views.InfusionViewSet, basename="infusion")
router.register("adverse-events", views.AdverseEventViewSet, basename="adverse-event")
router.register("medications", views.MedicationViewSet, basename="medication")
router.register("responses", views.ResponseViewSet, basename="response")
router.register("follow-ups", views.FollowUpViewSet, basename="follow-up")
urlpatterns = router.urls

