"""The old service's list endpoint: every row, highest id first."""

from rest_framework import mixins, viewsets

from .models import SomeModel
from .serializers import SomeModelSerializer


class SomeModelViewSet(mixins.ListModelMixin, viewsets.GenericViewSet):
    queryset = SomeModel.objects.all().order_by("-id")
    serializer_class = SomeModelSerializer
