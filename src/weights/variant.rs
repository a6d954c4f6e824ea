//! The published MedSAM2 checkpoints: the five files of the hub repository `wanglab/MedSAM2`
//! (`MedSAM2_latest.pt`, the default, and the checkpoints fine-tuned for one task), what each was
//! trained for, and their licence, for the command line's `--model NAME` and the viewer's model
//! panel. The descriptions follow the repository's checkpoint list; the licence is the one the
//! model card declares (`license: cc-by-sa-4.0`) together with the card's restriction of the
//! weights to research and education.
//!
//! No size or SHA-256 is recorded here: neither the model card nor any public page found states
//! them. A download is checked against what the hub announces for the file at download time: its
//! SHA-256, the LFS ETag, which also fixes its length (the announced length sizes the transfer
//! and its resume); see [`super::download`].

use super::{HubFile, DEFAULT_REPO};
use clap::builder::{PossibleValue, TypedValueParser, ValueParserFactory};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsStr;
use std::fmt;
use std::str::FromStr;

/// Licence of every published MedSAM2 checkpoint, as shown where a download is offered.
pub const LICENCE: &str = "CC-BY-SA-4.0 (research and education use)";

/// Prefix of every checkpoint name; `--model` accepts the names with or without it.
const NAME_PREFIX: &str = "MedSAM2_";

/// One published MedSAM2 checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum ModelVariant {
    /// `MedSAM2_latest.pt`, the general model.
    #[default]
    Latest,
    /// `MedSAM2_CTLesion.pt`.
    CtLesion,
    /// `MedSAM2_MRI_LiverLesion.pt`.
    MriLiverLesion,
    /// `MedSAM2_US_Heart.pt`.
    UsHeart,
    /// `MedSAM2_2411.pt`.
    Release2411,
}

impl ModelVariant {
    /// Every variant, the default first.
    pub const ALL: [ModelVariant; 5] = [
        ModelVariant::Latest,
        ModelVariant::CtLesion,
        ModelVariant::MriLiverLesion,
        ModelVariant::UsHeart,
        ModelVariant::Release2411,
    ];

    /// The name the hub gives the checkpoint (its file name without `.pt`), e.g. `MedSAM2_CTLesion`.
    pub fn name(self) -> &'static str {
        match self {
            ModelVariant::Latest => "MedSAM2_latest",
            ModelVariant::CtLesion => "MedSAM2_CTLesion",
            ModelVariant::MriLiverLesion => "MedSAM2_MRI_LiverLesion",
            ModelVariant::UsHeart => "MedSAM2_US_Heart",
            ModelVariant::Release2411 => "MedSAM2_2411",
        }
    }

    /// The checkpoint's file in the hub repository, e.g. `MedSAM2_CTLesion.pt`.
    pub fn file_name(self) -> String {
        format!("{}.pt", self.name())
    }

    /// What the checkpoint was trained or fine-tuned for, in one line.
    pub fn description(self) -> &'static str {
        match self {
            ModelVariant::Latest => "general 3D images and videos (recommended)",
            ModelVariant::CtLesion => "CT lesions (DeepLesion)",
            ModelVariant::MriLiverLesion => "liver lesions in MRI",
            ModelVariant::UsHeart => "echocardiography (heart ultrasound) video",
            ModelVariant::Release2411 => "the first release, November 2024",
        }
    }

    /// The licence the weights come under (the same for every variant).
    pub fn licence(self) -> &'static str {
        LICENCE
    }

    /// The checkpoint's file in the public repository `wanglab/MedSAM2`.
    pub fn hub_file(self) -> HubFile {
        HubFile { repo: DEFAULT_REPO.to_owned(), file: self.file_name() }
    }

    /// The variant whose hub file is exactly `file` (e.g. `MedSAM2_US_Heart.pt`), if any.
    pub fn for_file(file: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|variant| variant.file_name() == file)
    }
}

impl fmt::Display for ModelVariant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A `--model` value that names no published checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown MedSAM2 model {given:?}: use one of {} (case, the MedSAM2_ prefix and .pt may be left out)", valid_names())]
pub struct UnknownModelVariant {
    pub given: String,
}

fn valid_names() -> String {
    ModelVariant::ALL.map(ModelVariant::name).join(", ")
}

impl FromStr for ModelVariant {
    type Err = UnknownModelVariant;

    /// Accepts a checkpoint's name in any case, with or without the `MedSAM2_` prefix and the
    /// `.pt` extension: `MedSAM2_CTLesion`, `ctlesion`, `MedSAM2_CTLesion.pt` are the same.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let lower = s.trim().to_ascii_lowercase();
        let stem = lower.strip_suffix(".pt").unwrap_or(&lower);
        Self::ALL
            .into_iter()
            .find(|variant| {
                let name = variant.name();
                name.eq_ignore_ascii_case(stem) || name[NAME_PREFIX.len()..].eq_ignore_ascii_case(stem)
            })
            .ok_or_else(|| UnknownModelVariant { given: s.to_owned() })
    }
}

impl Serialize for ModelVariant {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for ModelVariant {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer)?.parse().map_err(serde::de::Error::custom)
    }
}

/// clap's parser for `--model`: [`ModelVariant::from_str`], with the names and descriptions
/// listed in `--help`.
#[derive(Clone, Copy, Debug)]
pub struct ModelVariantParser;

impl TypedValueParser for ModelVariantParser {
    type Value = ModelVariant;

    fn parse_ref(&self, cmd: &clap::Command, arg: Option<&clap::Arg>, value: &OsStr) -> Result<ModelVariant, clap::Error> {
        let invalid = |message: String| {
            let option = arg.map_or_else(|| "the model".to_owned(), |arg| arg.to_string());
            clap::Error::raw(clap::error::ErrorKind::InvalidValue, format!("invalid value for {option}: {message}\n")).with_cmd(cmd)
        };
        let text = value.to_str().ok_or_else(|| invalid(format!("{value:?} is not UTF-8")))?;
        text.parse().map_err(|error: UnknownModelVariant| invalid(error.to_string()))
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        Some(Box::new(ModelVariant::ALL.into_iter().map(|variant| PossibleValue::new(variant.name()).help(variant.description()))))
    }
}

impl ValueParserFactory for ModelVariant {
    type Parser = ModelVariantParser;

    fn value_parser() -> ModelVariantParser {
        ModelVariantParser
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_the_hub_files() {
        let files: Vec<String> = ModelVariant::ALL.map(ModelVariant::file_name).to_vec();
        assert_eq!(
            files,
            ["MedSAM2_latest.pt", "MedSAM2_CTLesion.pt", "MedSAM2_MRI_LiverLesion.pt", "MedSAM2_US_Heart.pt", "MedSAM2_2411.pt"]
        );
        assert_eq!(ModelVariant::default(), ModelVariant::Latest);
        assert_eq!(
            ModelVariant::UsHeart.hub_file(),
            HubFile { repo: "wanglab/MedSAM2".into(), file: "MedSAM2_US_Heart.pt".into() }
        );
        assert_eq!(HubFile::default(), ModelVariant::Latest.hub_file());
        for variant in ModelVariant::ALL {
            assert_eq!(ModelVariant::for_file(&variant.file_name()), Some(variant));
            assert_eq!(variant.to_string().parse::<ModelVariant>(), Ok(variant));
        }
        assert_eq!(ModelVariant::for_file("MedSAM2_ctlesion.pt"), None, "a file name is matched exactly");
        assert_eq!(ModelVariant::for_file("sam2.1_hiera_tiny.pt"), None);
    }

    #[test]
    fn names_parse_in_any_case_with_or_without_prefix_and_extension() {
        for given in ["MedSAM2_CTLesion", "ctlesion", "CTLESION", "medsam2_ctlesion", "MedSAM2_CTLesion.pt", "ctlesion.PT", " CTLesion "] {
            assert_eq!(given.parse::<ModelVariant>(), Ok(ModelVariant::CtLesion), "{given:?}");
        }
        assert_eq!("latest".parse::<ModelVariant>(), Ok(ModelVariant::Latest));
        assert_eq!("mri_liverlesion".parse::<ModelVariant>(), Ok(ModelVariant::MriLiverLesion));
        assert_eq!("US_Heart.pt".parse::<ModelVariant>(), Ok(ModelVariant::UsHeart));
        assert_eq!("2411".parse::<ModelVariant>(), Ok(ModelVariant::Release2411));
    }

    #[test]
    fn unknown_names_are_refused_with_the_valid_ones_listed() {
        for given in ["", "heart", "MedSAM2", "MedSAM2_", "MedSAM2_latest.pth", "sam2.1_hiera_tiny", "lesion", "é.pt"] {
            let error = given.parse::<ModelVariant>().unwrap_err();
            assert_eq!(error.given, given);
            let message = error.to_string();
            assert!(
                message.contains("MedSAM2_latest, MedSAM2_CTLesion, MedSAM2_MRI_LiverLesion, MedSAM2_US_Heart, MedSAM2_2411"),
                "{message}"
            );
        }
    }

    #[test]
    fn settings_form_is_the_name() {
        assert_eq!(serde_json::to_string(&ModelVariant::MriLiverLesion).unwrap(), "\"MedSAM2_MRI_LiverLesion\"");
        assert_eq!(serde_json::from_str::<ModelVariant>("\"MedSAM2_2411\"").unwrap(), ModelVariant::Release2411);
        assert!(serde_json::from_str::<ModelVariant>("\"MedSAM3\"").is_err());
    }

    #[test]
    fn clap_parses_through_from_str_and_lists_the_names() {
        #[derive(clap::Parser, Debug)]
        struct Args {
            #[arg(long, default_value_t)]
            model: ModelVariant,
        }
        use clap::{CommandFactory, Parser};
        assert_eq!(Args::try_parse_from(["x"]).unwrap().model, ModelVariant::Latest);
        assert_eq!(Args::try_parse_from(["x", "--model", "us_heart"]).unwrap().model, ModelVariant::UsHeart);
        let error = Args::try_parse_from(["x", "--model", "heart"]).unwrap_err();
        assert_eq!(error.kind(), clap::error::ErrorKind::InvalidValue);
        assert!(error.to_string().contains("unknown MedSAM2 model \"heart\""), "{error}");
        let help = Args::command().render_long_help().to_string();
        assert!(help.contains("MedSAM2_CTLesion") && help.contains("CT lesions (DeepLesion)"), "{help}");
    }
}
