"""Provider adapters. Each package is one provider type, registered by entry point
(group ``killswitch.providers``) and imported only when an inventory uses it."""
