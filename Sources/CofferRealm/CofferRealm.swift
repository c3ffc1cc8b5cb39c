// CofferRealm
