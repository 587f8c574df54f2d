"""The Shopify sandbox's GraphQL Admin API: schema, cost and throttling, bulk operations, mutations."""

from __future__ import annotations

from ferry.sandbox.shopify.graphql.endpoint import GraphQLApi
from ferry.sandbox.shopify.graphql.schema import admin_schema

__all__ = ["GraphQLApi", "admin_schema"]
