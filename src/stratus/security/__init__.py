"""Security: API keys and projects, access control, audit log, rate limits, masking, encryption at rest.

Import the modules directly (stratus.security.keys, ...): the artifact store imports the encryption module,
so this package stays empty to keep the store free of import cycles.
"""
