// CofferVault
