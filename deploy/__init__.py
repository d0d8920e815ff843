"""The wire: releases on devices over SSH (Fabric) or into a local folder laid out like a device."""
