"""The notifier: email alerts with the snapshot, arming, and the deterrent (docs/notifier.md)."""
