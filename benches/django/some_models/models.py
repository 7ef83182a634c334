"""The old service's model, over the table rowsync's migrations create (never migrated here)."""

from django.db import models


class SomeModel(models.Model):
    id = models.BigIntegerField(primary_key=True)
    name = models.CharField(max_length=200)

    class Meta:
        managed = False
        db_table = "some_model"
