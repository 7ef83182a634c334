"""Routes: the old service's router, `/api/some_models/`."""

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from some_models.views import SomeModelViewSet

router = DefaultRouter()
router.register("some_models", SomeModelViewSet)

urlpatterns = [path("api/", include(router.urls))]
