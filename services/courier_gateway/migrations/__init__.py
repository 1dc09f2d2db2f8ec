"""Data migrations between versions of the stored documents (``courier-gateway migrate``)."""

from courier_gateway.migrations.tenancy import Ownership, TenancyReport, migrate_to_tenancy

__all__ = ["Ownership", "TenancyReport", "migrate_to_tenancy"]
