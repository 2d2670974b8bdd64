"""The clinic tier: witnessing and archiving what enrolled hubs forward upstream."""
