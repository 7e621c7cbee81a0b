"""DB-LGE scar service: DICOM series in, myocardium and scar masks and scar extent out.

Research use only. The models are trained on synthetic phantoms and are not
validated clinically.
"""

__version__ = "0.1.0"
