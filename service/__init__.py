"""LGE scar service: DICOM series in, myocardium and scar masks and scar extent out.

Dark-blood and bright-blood LGE. Research use only. The models are trained on
synthetic phantoms and 70 real scans from one centre (EMIDEC), and are not
validated clinically.
"""

__version__ = "0.4.1"
