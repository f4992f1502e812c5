"""SMPL / SMPL-X bodies (loading, conversion, synthetic stand-ins) and their OpenPose skeleton conditions."""
