"""Unit and description of every catalog column skymorph writes (the FITS ``TUNITn`` /
``TCOMMn`` cards and the Parquet field metadata of :mod:`skymorph.io.catalog`)."""

from __future__ import annotations

import re

NOCONS = "NOCONS"
"""``morph_type`` of a galaxy whose K-means, BIRCH and ward labels disagree (not
kept by the consensus vote).  Not the experts' ``UNC``, which names a consensus
cluster the experts could not type."""

# Units of image fluxes are those of the input pixels (e-/s for HST drizzled
# images, nanomaggies, ADU...): skymorph does not know them, so no TUNIT is claimed.
_IMG = "in the input images' pixel units"

COLUMNS: dict[str, tuple[str | None, str]] = {
    # ingest
    "id": (None, "galaxy identifier (the input catalog's, else the file stem), stored as text: cast the ids "
                 "of another table to text to join (pandas: .astype(str)); the dtype is in ID_DTYPE"),
    "index": (None, "row of the galaxy in the run's stamp arrays (0-based)"),
    "origin": (None, "input file the stamp was cut from"),
    "hdu": (None, "FITS HDU of the input image"),
    "ra": ("deg", "right ascension (ICRS) of the stamp centre"),
    "dec": ("deg", "declination (ICRS) of the stamp centre"),
    "x": ("pix", "x of the galaxy in its input image (0-based)"),
    "y": ("pix", "y of the galaxy in its input image (0-based)"),
    "orig_height": ("pix", "height of the input image"),
    "orig_width": ("pix", "width of the input image"),
    "padded": (None, "the input was smaller than the stamp and was padded"),
    "framing": (None, "crop (native scale) or resample (frame resampled to the stamp)"),
    "frame_side": ("pix", "side of the input frame that became the stamp (input pixels)"),
    "background": (None, f"background level of the stamp, {_IMG}"),
    "noise_sigma": (None, f"background standard deviation of the stamp, {_IMG}"),
    "snr_pixel": (None, "ingest's mean signal-to-noise per pixel of the galaxy"),
    "nan_filled": (None, "number of NaN pixels ingest filled with noise"),
    "linear": (None, "stamp pixels are linear in flux (FITS/NPY); false for display-scaled PNG/JPEG"),
    "stamp_flux": (None, f"flux in the stamp, {_IMG}"),
    "nonfinite_fraction": (None, "fraction of the stamp's pixels that were NaN or infinite in the input"),
    "has_rms": (None, "the stamp has a per-pixel error map in the run's rms array"),
    "rms_source": (None, "where the stamp's error map came from (HDU, companion file, catalog noise)"),
    "has_psf": (None, "the stamp has a PSF in the run's psf array"),
    "psf_source": (None, "where the stamp's PSF came from (collection file, PSF HDU)"),
    "psf_flux_fraction": (None, "fraction of the PSF's flux kept after cropping it to ingest.psf_size"),
    "note": (None, "ingest's remark on the stamp (e.g. an unusable PSF); empty when none"),
    # GalSim RealGalaxyCatalog columns (the bundled COSMOS collection)
    "IDENT": (None, "input catalog identifier"),
    "RA": ("deg", "right ascension from the input catalog"),
    "DEC": ("deg", "declination from the input catalog"),
    "MAG": ("mag", "magnitude from the input catalog"),
    "BAND": (None, "filter of the input catalog's images"),
    "PIXEL_SCALE": ("arcsec / pix", "pixel scale of the input images (input catalog)"),
    "ZPHOT": (None, "photometric redshift from the input catalog"),
    # cluster, inspection, extend
    "cluster_kmeans": (None, "K-means cluster label"),
    "cluster_birch": (None, "BIRCH cluster label, mapped to the K-means labels by plurality"),
    "cluster_agglomerative": (None, "agglomerative (ward) cluster label, mapped to the K-means labels"),
    "cluster": (None, "consensus cluster label; -1 where the three clusterings disagree"),
    "consensus": (None, "K-means, BIRCH and ward agree (the galaxy is kept)"),
    "morph_type": (None, "experts' type of the consensus cluster (SPH, ETD, LTD, IRR, UNC); "
                         f"{NOCONS} = no consensus; missing = not typed yet"),
    "type_flag": (None, "how the cluster's type was decided (inspect merge)"),
    "type_agreement": (None, "fraction of the experts who voted for the cluster's type"),
    "expert_flag": (None, "an expert flagged this galaxy in the voting app (inspection/flags.csv)"),
    "expert_comment": (None, "the flagging experts' comments, 'name: comment' joined by ' | '"),
    "morph_type_final": (None, "type of every galaxy: experts' where kept, else the extended classifier's; "
                               "OOD = outside the classifier's training distribution (extend.ood_final)"),
    "type_source": (None, "experts (the experts' type), extended (the classifier's), ood (extended, "
                          "but outside the training distribution: seen by no expert, not confident) or "
                          "taught (an expert typed the galaxy itself)"),
    "morph_type_ml": (None, "the extension classifier's type (every galaxy, training ones included)"),
    "ml_probability": (None, "the classifier's probability of morph_type_ml (not a p_<TYPE> column)"),
    "ml_confident": (None, "ml_probability >= extend.confidence_threshold and not out of distribution"),
    "ml_ood": (None, "farther from the training galaxies than extend.ood_quantile of them are from theirs"),
    "ml_ood_distance": (None, "mean distance to the nearest training galaxies (extend's OOD test)"),
    # measure
    "xc_centroid": ("pix", "x of the flux-weighted centroid (statmorph, 0-based stamp pixels)"),
    "yc_centroid": ("pix", "y of the flux-weighted centroid (statmorph)"),
    "ellipticity_centroid": (None, "ellipticity about the centroid (statmorph)"),
    "elongation_centroid": (None, "elongation about the centroid (statmorph)"),
    "orientation_centroid": ("rad", "orientation about the centroid (statmorph, from +x)"),
    "xc_asymmetry": ("pix", "x of the centre that minimises the asymmetry (statmorph)"),
    "yc_asymmetry": ("pix", "y of the centre that minimises the asymmetry (statmorph)"),
    "ellipticity_asymmetry": (None, "ellipticity about the asymmetry centre (statmorph)"),
    "elongation_asymmetry": (None, "elongation about the asymmetry centre (statmorph)"),
    "orientation_asymmetry": ("rad", "orientation about the asymmetry centre (statmorph, from +x)"),
    "flux_circ": (None, f"flux within 2 circular Petrosian radii, {_IMG}"),
    "flux_ellip": (None, f"flux within 2 elliptical Petrosian radii, {_IMG}"),
    "rpetro_circ": ("pix", "circular Petrosian radius (statmorph)"),
    "rpetro_ellip": ("pix", "elliptical Petrosian semi-major axis (statmorph)"),
    "rmax_circ": ("pix", "distance of the farthest segment pixel from the centre (statmorph)"),
    "rmax_ellip": ("pix", "elliptical semi-major axis reaching the farthest pixel (statmorph)"),
    "rhalf_circ": ("pix", "circular half-light radius (statmorph, non-parametric)"),
    "rhalf_ellip": ("pix", "elliptical half-light semi-major axis (statmorph)"),
    "r20": ("pix", "radius holding 20% of the light (statmorph)"),
    "r50": ("pix", "radius holding 50% of the light (statmorph)"),
    "r80": ("pix", "radius holding 80% of the light (statmorph)"),
    "gini": (None, "Gini coefficient of the pixel fluxes (Lotz et al. 2004)"),
    "m20": (None, "M20, second moment of the brightest 20% of the light (Lotz et al. 2004)"),
    "gini_m20_bulge": (None, "Gini-M20 bulge statistic F(G, M20) (Snyder et al. 2015)"),
    "gini_m20_merger": (None, "Gini-M20 merger statistic S(G, M20) (Snyder et al. 2015)"),
    "sn_per_pixel": (None, "mean signal-to-noise per pixel of the galaxy (statmorph)"),
    "concentration": (None, "concentration C = 5 log10(r80 / r20) (Conselice 2003)"),
    "asymmetry": (None, "rotational asymmetry A (Conselice 2003), background-corrected: can be negative "
                        "for faint, smooth galaxies (the sky's asymmetry exceeds the galaxy's)"),
    "smoothness": (None, "smoothness (clumpiness) S (Conselice 2003)"),
    "multimode": (None, "multimode M (Freeman et al. 2013)"),
    "intensity": (None, "intensity I (Freeman et al. 2013)"),
    "deviation": (None, "deviation D (Freeman et al. 2013)"),
    "rms_asymmetry2": (None, "RMS asymmetry squared (Sazonova et al. 2024)"),
    "outer_asymmetry": (None, "asymmetry outside the half-light ellipse (Wen et al. 2014)"),
    "shape_asymmetry": (None, "asymmetry of the binary segment (Pawlik et al. 2016)"),
    "sersic_amplitude": (None, f"Sersic surface brightness at r_e, {_IMG} per pixel"),
    "sersic_rhalf": ("pix", "Sersic effective (half-light) radius r_e, semi-major axis"),
    "sersic_n": (None, "Sersic index n of the single-Sersic fit"),
    "sersic_xc": ("pix", "x of the Sersic model centre"),
    "sersic_yc": ("pix", "y of the Sersic model centre"),
    "sersic_ellip": (None, "ellipticity of the Sersic model"),
    "sersic_theta": ("rad", "position angle of the Sersic model (from +x)"),
    "sersic_chi2_dof": (None, "reduced chi^2 of the Sersic fit"),
    "sersic_aic": (None, "Akaike information criterion of the Sersic fit"),
    "sersic_bic": (None, "Bayesian information criterion of the Sersic fit"),
    "sky_mean": (None, f"mean of statmorph's sky pixels, {_IMG}"),
    "sky_median": (None, f"median of statmorph's sky pixels, {_IMG}"),
    "sky_sigma": (None, f"standard deviation of statmorph's sky pixels, {_IMG}"),
    "xmin_stamp": ("pix", "statmorph's sub-stamp: first column"),
    "ymin_stamp": ("pix", "statmorph's sub-stamp: first row"),
    "xmax_stamp": ("pix", "statmorph's sub-stamp: last column"),
    "ymax_stamp": ("pix", "statmorph's sub-stamp: last row"),
    "nx_stamp": ("pix", "statmorph's sub-stamp: width"),
    "ny_stamp": ("pix", "statmorph's sub-stamp: height"),
    "flag": (None, "statmorph flag: 0 good, 1 suspect, 2 bad, 4 catastrophic; -1 not measured"),
    "flag_sersic": (None, "statmorph Sersic flag: 0 good, 1 suspect, 2 bad, 4 failed; -1 no fit"),
    "flag_doublesersic": (None, "statmorph double-Sersic flag; -1 no fit"),
    "psi": (None, "multiplicity Psi (Law et al. 2007)"),
    "g2": (None, "gradient asymmetry G2 (Rosa et al. 2018), noise tolerance as in the settings"),
    "g2_reliable": (None, "G2 is valid: nonparam_ok, G2 finite and S/N per pixel >= measure.g2_min_sn"),
    "nonparam_ok": (None, "non-parametric values (Gini, M20, C, A, S, M, I, D, radii, Psi) are valid: "
                          "statmorph flag 0 (good) or 1 (suspect)"),
    "sersic_ok": (None, "Sersic values (n, r_e, ...) are valid: flag_sersic 0 (good) or 1 (suspect) and "
                        "n finite; raw values of bad fits are kept"),
    "segment_area": ("pix2", "pixels in the galaxy's segment"),
    "measure_ok": (None, "statmorph measured the galaxy with flag 0 (good) or 1 (suspect), so its "
                         "non-parametric values are valid (= nonparam_ok); Sersic: sersic_ok, "
                         "G2: g2_reliable"),
    "measure_reason": (None, "why a galaxy was not measured, or statmorph's flag >= 2 reason"),
    "measure_warnings": (None, "statmorph's warnings"),
    "measure_linear": (None, "measured on linear pixels; false: display-scaled PNG/JPEG, values unreliable"),
    "measure_psf": (None, "PSF used in the Sersic fits: none, file, or array (per stamp)"),
    "measure_weights": (None, "per-pixel errors used: noise_sigma (constant), gain, rms array, or the "
                              "named weight array"),
    "zeropoint": ("mag", "photometric zero point of the stamp's pixel units (measure.zeropoint, else "
                         "the input header's MAGZERO / PHOTZP); NaN: unknown"),
    "mag_petro": ("mag", "zeropoint - 2.5 log10(flux_circ): flux within 2 circular Petrosian radii"),
    "mag_sersic": ("mag", "zeropoint - 2.5 log10(total flux of the Sersic model); valid where sersic_ok"),
    "stamp_pixel_scale": ("arcsec / pix", "pixel scale of the stamp (input scale x frame / stamp size)"),
    "sersic_rhalf_arcsec": ("arcsec", "Sersic effective radius r_e (semi-major axis)"),
    "rhalf_circ_arcsec": ("arcsec", "circular half-light radius (statmorph, non-parametric)"),
}
"""Unit and description of every column skymorph writes (and of the GalSim
RealGalaxyCatalog columns the bundled data carry)."""

_PATTERNS: list[tuple[str, str | None, str]] = [
    (r"^sersic_(rhalf|xc|yc)_err$", "pix", "1-sigma error of sersic_\\1 from the fit's covariance matrix"),
    (r"^sersic_theta_err$", "rad", "1-sigma error of sersic_theta from the fit's covariance matrix"),
    (r"^sersic_(\w+)_err$", None, "1-sigma error of sersic_\\1 from the fit's covariance matrix"),
    (r"^(gini|m20|concentration|asymmetry|smoothness|multimode|intensity|deviation)_err$", None,
     "1-sigma error of \\1 by noise resampling (measure.resamples; NaN when off)"),
    (r"^doublesersic_(xc|yc|rhalf\d)$", "pix", "double-Sersic model parameter (statmorph)"),
    (r"^doublesersic_theta\d$", "rad", "double-Sersic component position angle (statmorph)"),
    (r"^doublesersic_", None, "double-Sersic model parameter (statmorph)"),
    (r"^p_([A-Za-z0-9_]+)$", None, "probability of type \\1 (extend); the p_<TYPE> of a galaxy sum to 1"),
    (r"^HSC_[a-zA-Z]$", "mag", "HSC magnitude from the input catalog"),
    (r"^cat_", None, "input catalog column (renamed: ingest has a column of that name)"),
    (r"^desc_(r20|r50|r80)(_p[0-9.]+)?$", "pix", "cheap shape descriptor \\1\\2 used as a clustering feature "
     "(skymorph.core.descriptors), not a physical measurement: see measure's columns"),
    (r"^desc_(.+)$", None, "cheap shape descriptor \\1 used as a clustering feature "
     "(skymorph.core.descriptors), not a physical measurement: see measure's columns"),
]


def column_info(name: str) -> tuple[str | None, str]:
    """Unit (an astropy unit string, or ``None``) and description of a column."""
    if name in COLUMNS:
        return COLUMNS[name]
    for pattern, unit, text in _PATTERNS:
        match = re.match(pattern, name)
        if match:
            return unit, match.expand(text)
    return None, "column of the input catalog or sources table (no unit known to skymorph)"
