"""labguard's own code package (the Azure Functions convention for code shared by triggers)."""
