"""`{"id": 5, "name": "smth"}`, as the old service answered."""

from rest_framework import serializers

from .models import SomeModel


class SomeModelSerializer(serializers.ModelSerializer):
    class Meta:
        model = SomeModel
        fields = ["id", "name"]
