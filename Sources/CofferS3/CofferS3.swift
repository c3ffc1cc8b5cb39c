// CofferS3
