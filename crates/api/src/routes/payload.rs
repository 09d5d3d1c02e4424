//! How the route table holds types: enough to emit their schemas and to
//! tell, at run time, whether a Rust type is the one a route promises.

use std::any::TypeId;
use std::borrow::Cow;
use std::fmt;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};

/// A JSON body's type, as the table keeps it.
#[derive(Clone, Copy)]
pub struct Payload {
    shape: Shape,
    name: fn() -> Cow<'static, str>,
    schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
    type_id: fn() -> TypeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One `T`, referenced as a component schema.
    One,
    /// A JSON array of `T`.
    List,
    /// Any JSON object (the OpenAPI document itself).
    Document,
}

impl Payload {
    /// One `T`.
    pub const fn of<T: ToSchema + 'static>() -> Self {
        Self {
            shape: Shape::One,
            name: T::name,
            schemas: collect::<T>,
            type_id: TypeId::of::<T>,
        }
    }

    /// A `Vec<T>`.
    pub const fn list_of<T: ToSchema + 'static>() -> Self {
        Self {
            shape: Shape::List,
            name: T::name,
            schemas: collect::<T>,
            type_id: TypeId::of::<Vec<T>>,
        }
    }

    /// Any JSON object, decoded as a `serde_json::Value`.
    pub const fn document() -> Self {
        Self {
            shape: Shape::Document,
            name: document_name,
            schemas: no_schemas,
            type_id: TypeId::of::<serde_json::Value>,
        }
    }

    /// The component schema's name (of the element, for a list).
    pub fn name(&self) -> Cow<'static, str> {
        (self.name)()
    }

    /// Whether the Rust type of this body is `T`.
    pub fn is<T: 'static>(&self) -> bool {
        (self.type_id)() == TypeId::of::<T>()
    }

    /// The schema a request or response refers to.
    pub fn schema(&self) -> RefOr<Schema> {
        let one = RefOr::Ref(Ref::from_schema_name(self.name()));
        match self.shape {
            Shape::One => one,
            Shape::List => ArrayBuilder::new().items(one).into(),
            Shape::Document => ObjectBuilder::new().schema_type(Type::Object).into(),
        }
    }

    /// The component schemas this body needs: its own and those it uses.
    pub fn component_schemas(&self, out: &mut Vec<(String, RefOr<Schema>)>) {
        (self.schemas)(out)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            Shape::One => write!(f, "{}", self.name()),
            Shape::List => write!(f, "[{}]", self.name()),
            Shape::Document => write!(f, "document"),
        }
    }
}

fn collect<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

fn no_schemas(_: &mut Vec<(String, RefOr<Schema>)>) {}

fn document_name() -> Cow<'static, str> {
    Cow::Borrowed("document")
}

/// A request's query string, from a type deriving `IntoParams`.
#[derive(Clone, Copy)]
pub struct Query {
    params: fn() -> Vec<Parameter>,
    type_id: fn() -> TypeId,
}

impl Query {
    pub const fn of<T: IntoParams + 'static>() -> Self {
        Self {
            params: query_params::<T>,
            type_id: TypeId::of::<T>,
        }
    }

    /// The query parameters, for the OpenAPI document.
    pub fn parameters(&self) -> Vec<Parameter> {
        (self.params)()
    }

    pub fn is<T: 'static>(&self) -> bool {
        (self.type_id)() == TypeId::of::<T>()
    }
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.parameters().into_iter().map(|p| p.name).collect();
        write!(f, "?{}", names.join("&"))
    }
}

fn query_params<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}
